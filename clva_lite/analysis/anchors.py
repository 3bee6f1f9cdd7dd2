"""Pure tensor functions behind the paper's Fig. 1 and Fig. 2b: group shares, anchors and drift curves.

Shapes: ``L`` decoder layers, ``H`` heads, ``V`` visual tokens, ``N`` prompts (or decoding steps) pooled.
"""

from __future__ import annotations

import torch

from ..attention.heads import HeadClasses, normalise_visual, normalised_entropy


def group_share_matrix(shares: torch.Tensor) -> torch.Tensor:
    """Mean share of every group per layer and head: (..., L, H, 4) -> (L, H, 4)."""
    return shares.reshape(-1, *shares.shape[-3:]).mean(0)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis, broadcasting the rest."""
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)


def anchor_distribution(visual: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Mean normalised visual distribution over the selected heads.

    visual: (..., L, H, V) raw visual attention; heads: (L, H) bool. Returns (..., V).
    """
    if not bool(heads.any()):
        raise ValueError("no head selected for this anchor; widen the band or relax the head rule")
    p = normalise_visual(visual)
    return p[..., heads, :].mean(-2)


def anchor_correlations(visual: torch.Tensor, classes: HeadClasses, early: list[int], intermediate: list[int]
                        ) -> dict[str, torch.Tensor]:
    """Per prompt and layer: how much each layer's visual attention looks like each anchor.

    visual: (N, L, H, V) raw visual attention of N prompts (or decoding steps). The negative anchor is the mean
    visual distribution of the early band's insensitive heads, the positive anchor that of the intermediate band's
    sensitive heads, both of the same prompt. Returns ``early_insensitive`` and ``mid_sensitive``, each (N, L):
    the Pearson correlation between the layer's head-mean visual distribution and the anchor.
    """
    negative = anchor_distribution(visual, classes.insensitive(early))  # (N, V)
    positive = anchor_distribution(visual, classes.sensitive(intermediate))
    layer_mean = normalise_visual(visual).mean(-2)  # (N, L, V)
    return {"early_insensitive": pearson(layer_mean, negative.unsqueeze(1)),
            "mid_sensitive": pearson(layer_mean, positive.unsqueeze(1))}


def drift_curves(visual: torch.Tensor, classes: HeadClasses, early: list[int], intermediate: list[int]
                 ) -> dict[str, torch.Tensor]:
    """Fig. 2b: per-layer correlation with the early-insensitive and mid-sensitive anchors, and entropy.

    visual: (N, L, H, V) raw visual attention of N prompts (or steps). Returns, each of shape (L,):
    ``corr_early_insensitive`` and ``corr_mid_sensitive`` (mean over N of :func:`anchor_correlations`), and
    ``entropy_sensitive`` (mean normalised entropy of each layer's top-share heads, chosen by the same rule
    within the layer).
    """
    correlations = anchor_correlations(visual, classes, early, intermediate)
    entropy = normalised_entropy(visual)  # (N, L, H)
    per_layer_sensitive = torch.stack([classes.sensitive([layer])[layer] for layer in range(visual.shape[1])])
    entropy_sensitive = (entropy * per_layer_sensitive).sum(-1) / per_layer_sensitive.sum(-1)
    return {
        "corr_early_insensitive": correlations["early_insensitive"].mean(0),
        "corr_mid_sensitive": correlations["mid_sensitive"].mean(0),
        "entropy_sensitive": entropy_sensitive.mean(0),
    }
