"""What the captured attention says: shares, entropy, anchors and drift; head classes fitted on calibration data;
their stability; attention on object patches (toy only, it needs object masks)."""

from .._lazy import lazy_submodules
from ..attention.heads import normalise_visual, normalised_entropy, visual_attention_share
from .anchors import anchor_correlations, anchor_distribution, drift_curves, group_share_matrix, pearson

__all__ = [
    "anchor_correlations", "anchor_distribution", "drift_curves", "group_share_matrix", "normalise_visual",
    "normalised_entropy", "pearson", "visual_attention_share",
]
__getattr__ = lazy_submodules(__name__, ("anchors", "calibration", "drift", "grounding", "sensitivity"))
