"""Static figures (Fig. 1, 2a, 2b, 5, anchors, deltas, logit lens) and an ipywidgets explorer that also leaves a
figure."""

from .._lazy import lazy_submodules
from .figures import (
    anchor_agreement_by_step,
    attention_before_after,
    attention_maps,
    criterion_grid,
    delta_forest,
    drift_curves,
    head_class_map,
    layer_heatmaps,
    lens_curves,
    metric_curves,
    overlay,
    premise_chart,
    visual_share_matrix,
    weight_grid,
)

__all__ = [
    "anchor_agreement_by_step", "attention_before_after", "attention_maps", "criterion_grid", "delta_forest",
    "drift_curves", "head_class_map", "layer_heatmaps", "lens_curves", "metric_curves", "overlay",
    "premise_chart", "visual_share_matrix", "weight_grid",
]
__getattr__ = lazy_submodules(__name__, ("figures", "widgets"))
