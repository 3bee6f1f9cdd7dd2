"""What the captured attention says: shares, entropy, anchors and drift; head classes fitted on calibration data;
their stability; attention on object patches (toy only, it needs object masks); a logit lens on yes/no answers."""

from .._lazy import lazy_submodules
from ..attention.heads import (
    DEFAULT_BANDS,
    HeadClasses,
    band_layers,
    fit_head_classes,
    normalise_visual,
    normalised_entropy,
    visual_attention_share,
)
from .anchors import anchor_correlations, anchor_distribution, drift_curves, group_share_matrix, pearson

# Head classes are defined in the core (CLVA consumes them) and re-exported here, where they are fitted and studied.
__all__ = [
    "DEFAULT_BANDS", "HeadClasses", "anchor_correlations", "anchor_distribution", "band_layers", "drift_curves",
    "fit_head_classes", "group_share_matrix", "normalise_visual", "normalised_entropy", "pearson",
    "visual_attention_share",
]
__getattr__ = lazy_submodules(__name__, ("anchors", "calibration", "drift", "grounding", "lens", "premise",
                                                "sensitivity"))
