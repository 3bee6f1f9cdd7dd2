"""Depth bands and the head classes CLVA's anchors read: which heads are vision-sensitive, which are not.

Shapes: ``L`` decoder layers, ``H`` heads, ``V`` visual tokens, ``N`` prompts (or decoding steps) pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "early": (0.0, 0.125),
    "intermediate": (0.25, 0.5),
    "deep": (0.625, 1.0),
}


def band_layers(band: tuple[float, float] | range | list[int], num_layers: int, name: str = "band") -> list[int]:
    """Layers of a band: a tuple ``(start, end)`` of depth fractions (end exclusive), or a ``range``/``list`` of
    layer indices.

    Fractions are rounded half up and transfer across depths: ``(0.25, 0.5)`` is layer 1 of 4, layers 2-3 of 8,
    6-11 of 24 and 8-15 of 32; ``(0.0, 0.125)`` is layer 0 of 4 or 8 and layers 0-3 of 32.
    """
    if isinstance(band, (range, list)):
        layers = sorted(int(b) for b in band)
    elif not (isinstance(band, tuple) and len(band) == 2):
        raise ValueError(f"{name} band {band!r} must be (start, end) depth fractions or a range/list of layers")
    else:
        start, end = band
        if not (0.0 <= start < end <= 1.0):
            raise ValueError(f"{name} band {band} must be depth fractions with 0 <= start < end <= 1")
        half_up = lambda x: int(x * num_layers + 0.5)  # adjacent bands never overlap or leave a gap
        layers = list(range(half_up(start), half_up(end)))
    if not layers:
        raise ValueError(f"{name} band {band} selects no layer of a {num_layers}-layer decoder; widen it")
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise ValueError(f"{name} band {band} names layers {bad} outside the decoder's 0..{num_layers - 1}")
    return layers


def visual_attention_share(shares: torch.Tensor) -> torch.Tensor:
    """Mean visual share per layer and head.

    shares: (..., L, H, 4) group shares (``GROUPS`` order) pooled over leading axes. Returns (L, H).
    """
    return shares[..., 1].reshape(-1, *shares.shape[-3:-1]).mean(0)


def normalise_visual(visual: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Visual distribution p = a[V] / sum(a[V]) along the last axis."""
    return visual / visual.sum(-1, keepdim=True).clamp_min(eps)


def normalised_entropy(visual: torch.Tensor) -> torch.Tensor:
    """Entropy of the visual distribution divided by log V: 0 = one patch, 1 = uniform. (..., V) -> (...)."""
    p = normalise_visual(visual)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return entropy / torch.log(torch.tensor(float(visual.shape[-1])))


@dataclass
class HeadClasses:
    """Vision-sensitive and vision-insensitive heads.

    visual_share: (L, H) mean visual share of each head on the data it was fitted on.
    rule: ``"topk"`` (within a band, the ``fraction`` of heads with the highest share are sensitive and the same
    fraction with the lowest are insensitive, at least one each) or ``"threshold"`` (share >= ``high`` is
    sensitive, share <= ``low`` insensitive).
    source: where the shares came from, e.g. ``"calibration"`` or ``"per-input"``.
    """

    visual_share: torch.Tensor
    rule: str = "topk"
    fraction: float = 0.25
    low: float = 0.05
    high: float = 0.3
    source: str = "calibration"

    def __post_init__(self) -> None:
        if self.rule not in ("topk", "threshold"):
            raise ValueError(f"head rule must be 'topk' or 'threshold', not {self.rule!r}")
        if not 0.0 < self.fraction <= 0.5:
            raise ValueError(f"fraction must be in (0, 0.5], got {self.fraction}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"thresholds need 0 <= low < high <= 1, got low={self.low}, high={self.high}")

    @property
    def num_layers(self) -> int:
        return self.visual_share.shape[0]

    def _band_mask(self, layers: list[int] | None) -> torch.Tensor:
        mask = torch.zeros_like(self.visual_share, dtype=torch.bool)
        mask[layers if layers is not None else slice(None)] = True
        return mask

    def _select(self, layers: list[int] | None, highest: bool) -> torch.Tensor:
        band = self._band_mask(layers)
        share = self.visual_share
        if self.rule == "threshold":
            chosen = share >= self.high if highest else share <= self.low
            return chosen & band
        count = max(1, round(self.fraction * int(band.sum())))
        scores = share.masked_fill(~band, float("-inf") if highest else float("inf"))
        order = scores.flatten().argsort(descending=highest)[:count]
        chosen = torch.zeros(share.numel(), dtype=torch.bool, device=share.device)
        chosen[order] = True
        return chosen.view_as(share)

    def sensitive(self, layers: list[int] | None = None) -> torch.Tensor:
        """(L, H) bool: vision-sensitive heads among ``layers`` (all layers when ``None``)."""
        return self._select(layers, highest=True)

    def insensitive(self, layers: list[int] | None = None) -> torch.Tensor:
        """(L, H) bool: vision-insensitive heads among ``layers``."""
        return self._select(layers, highest=False)


def fit_head_classes(shares: torch.Tensor, *, split: str, rule: str = "topk", fraction: float = 0.25,
                     low: float = 0.05, high: float = 0.3) -> HeadClasses:
    """Fit head classes from group shares (..., L, H, 4) recorded on ``split``.

    Fitting is only allowed on the calibration or train split: head classes chosen on test data would leak the
    evaluation into the method.
    """
    if str(split) in ("test", "Split.TEST"):
        raise ValueError("head classes must not be fitted on the test split; fit them on the calibration split")
    return HeadClasses(visual_attention_share(shares), rule=rule, fraction=fraction, low=low, high=high,
                       source=str(getattr(split, "value", split)))
