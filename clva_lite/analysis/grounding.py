"""Where attention lands on the toy image: object patches vs. background.

The toy world knows which 8x8 patch each visible object covers (:func:`clva_lite.toy.world.patch_labels`), so
"is the model looking at the object?" has a measurable answer: the share of visual attention on object patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..attention.heads import normalise_visual
from ..toy.world import CATEGORIES, Scene, patch_labels


def object_patch_mask(scene: Scene, category: str | None = None) -> torch.Tensor:
    """(V,) bool, row-major over the patch grid: patches covered by a visible object (of ``category`` if given).

    An absent ``category`` gives an all-False mask, so attention "on" it is 0 by definition.
    """
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown toy category {category!r}; known: {CATEGORIES}")
    categories, _ = patch_labels(scene)
    labels = torch.as_tensor(categories).flatten()
    if category is None:
        return labels < len(CATEGORIES)
    return labels == CATEGORIES.index(category)


def object_patch_masks(scenes: Sequence[Scene], categories: Sequence[str | None] | None = None) -> torch.Tensor:
    """(N, V) bool masks for N scenes (and optional per-scene categories)."""
    categories = categories if categories is not None else [None] * len(scenes)
    if len(categories) != len(scenes):
        raise ValueError(f"{len(scenes)} scenes but {len(categories)} categories; pass one per scene")
    return torch.stack([object_patch_mask(s, c) for s, c in zip(scenes, categories)])


def on_object_share(visual: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the visual attention that lands on masked patches.

    visual: (N, ..., V) raw or normalised visual attention; masks: (N, V) bool. Returns (N, ...): the sum of the
    renormalised visual distribution over masked patches (0 = all on background, 1 = all on the objects).
    """
    if masks.shape[0] != visual.shape[0] or masks.shape[-1] != visual.shape[-1]:
        raise ValueError(f"masks {tuple(masks.shape)} do not match visual attention {tuple(visual.shape)}: "
                         "need (N, V) for (N, ..., V)")
    p = normalise_visual(visual.float())
    shape = (masks.shape[0],) + (1,) * (visual.dim() - 2) + (masks.shape[-1],)
    return (p * masks.view(shape).to(p.dtype)).sum(-1)
