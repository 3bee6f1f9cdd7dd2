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


def check_band(band, name: str = "band") -> None:
    """A clear error now for a band that no decoder could have: ``(start, end)`` depth fractions with
    ``0 <= start < end <= 1``, or a non-empty ``range`` / ``list`` of layer indices >= 0."""
    if isinstance(band, (range, list)):
        if len(band) == 0 or any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in band):
            raise ValueError(f"{name} band {band!r} must list layer indices >= 0 (at least one)")
        return
    if not (isinstance(band, tuple) and len(band) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in band)):
        raise ValueError(f"{name} band {band!r} must be (start, end) depth fractions or a range/list of layers")
    start, end = band
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"{name} band {band} must be depth fractions with 0 <= start < end <= 1 (e.g. (0.5, 1.0))")


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


CRITERIA: dict[str, str] = {
    "share": "visual share: the head's attention mass on the image (the paper's Fig. 1)",
    "focus": "focus: 1 - normalised entropy of the head's visual distribution (looks at a few patches)",
    "share_focus": "share x focus: the head both looks at the image and looks somewhere in it",
}


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"head criterion {criterion!r} is unknown; use one of {tuple(CRITERIA)}")
    return criterion


def visual_focus(visual: torch.Tensor) -> torch.Tensor:
    """1 - normalised entropy of the visual distribution: 0 = uniform over the image, 1 = one patch.
    (..., V) -> (...)."""
    return 1.0 - normalised_entropy(visual)


def head_focus(visual: torch.Tensor) -> torch.Tensor:
    """Mean focus per layer and head. visual: (..., L, H, V) raw visual attention pooled over leading axes.
    Returns (L, H)."""
    return visual_focus(visual).reshape(-1, *visual.shape[-3:-1]).mean(0)


def criterion_score(criterion: str, share: torch.Tensor, focus: torch.Tensor | None) -> torch.Tensor:
    """The score a criterion ranks heads by (higher = more vision-sensitive); same shape as ``share``."""
    check_criterion(criterion)
    if criterion == "share":
        return share
    if focus is None:
        raise ValueError(
            f"head criterion {criterion!r} needs each head's focus (visual entropy): fit the classes with "
            "clva_lite.calibrate_heads(...) or fit_head_classes(shares, visual=visual, ...)"
        )
    return focus if criterion == "focus" else share * focus


@dataclass
class HeadClasses:
    """Vision-sensitive and vision-insensitive heads.

    visual_share: (L, H) mean visual share of each head on the data it was fitted on.
    focus: (L, H) mean focus (1 - normalised visual entropy) of each head, or ``None`` (then only ``"share"``).
    criterion: what "vision-sensitive" means (:data:`CRITERIA`): ``"share"``, ``"focus"`` or ``"share_focus"``.
        None needs object masks, so every criterion works on real models.
    rule: ``"topk"`` (within a band, the ``fraction`` of heads with the highest score are sensitive and the same
    fraction with the lowest are insensitive, at least one each) or ``"threshold"`` (score >= ``high`` is
    sensitive, score <= ``low`` insensitive; the thresholds are in the criterion's units, all in [0, 1]).
    source: where the shares came from, e.g. ``"calibration"`` or ``"per-input"``.
    """

    visual_share: torch.Tensor
    rule: str = "topk"
    fraction: float = 0.25
    low: float = 0.05
    high: float = 0.3
    source: str = "calibration"
    focus: torch.Tensor | None = None
    criterion: str = "share"

    def __post_init__(self) -> None:
        if self.rule not in ("topk", "threshold"):
            raise ValueError(f"head rule must be 'topk' or 'threshold', not {self.rule!r}")
        if not 0.0 < self.fraction <= 0.5:
            raise ValueError(f"fraction must be in (0, 0.5], got {self.fraction}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"thresholds need 0 <= low < high <= 1, got low={self.low}, high={self.high}")
        if self.focus is not None and self.focus.shape != self.visual_share.shape:
            raise ValueError(f"focus {tuple(self.focus.shape)} and visual_share {tuple(self.visual_share.shape)} "
                             "must both be (layers, heads)")
        self.score = criterion_score(self.criterion, self.visual_share, self.focus)

    @property
    def num_layers(self) -> int:
        return self.visual_share.shape[0]

    def with_criterion(self, criterion: str, **changes) -> HeadClasses:
        """The same fitted heads ranked by another criterion (and optionally another rule/fraction)."""
        fields = {"rule": self.rule, "fraction": self.fraction, "low": self.low, "high": self.high,
                  "source": self.source, "focus": self.focus, **changes}
        return HeadClasses(self.visual_share, criterion=criterion, **fields)

    def _band_mask(self, layers: list[int] | None) -> torch.Tensor:
        mask = torch.zeros_like(self.visual_share, dtype=torch.bool)
        mask[layers if layers is not None else slice(None)] = True
        return mask

    def _select(self, layers: list[int] | None, highest: bool) -> torch.Tensor:
        band = self._band_mask(layers)
        score = self.score
        if self.rule == "threshold":
            chosen = score >= self.high if highest else score <= self.low
            return chosen & band
        count = max(1, round(self.fraction * int(band.sum())))
        scores = score.masked_fill(~band, float("-inf") if highest else float("inf"))
        order = scores.flatten().argsort(descending=highest)[:count]
        chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        chosen[order] = True
        return chosen.view_as(score)

    def sensitive(self, layers: list[int] | None = None) -> torch.Tensor:
        """(L, H) bool: vision-sensitive heads among ``layers`` (all layers when ``None``)."""
        return self._select(layers, highest=True)

    def insensitive(self, layers: list[int] | None = None) -> torch.Tensor:
        """(L, H) bool: vision-insensitive heads among ``layers``."""
        return self._select(layers, highest=False)


def fit_head_classes(shares: torch.Tensor, *, split: str, visual: torch.Tensor | None = None,
                     criterion: str = "share", rule: str = "topk", fraction: float = 0.25, low: float = 0.05,
                     high: float = 0.3) -> HeadClasses:
    """Fit head classes from group shares (..., L, H, 4) recorded on ``split``, and from the visual attention
    (..., L, H, V) of the same prompts when given (it provides each head's focus, which ``"focus"`` and
    ``"share_focus"`` need).

    Fitting is only allowed on the calibration or train split: head classes chosen on test data would leak the
    evaluation into the method.
    """
    if str(split) in ("test", "Split.TEST"):
        raise ValueError("head classes must not be fitted on the test split; fit them on the calibration split")
    focus = head_focus(visual) if visual is not None else None
    return HeadClasses(visual_attention_share(shares), rule=rule, fraction=fraction, low=low, high=high,
                       source=str(getattr(split, "value", split)), focus=focus, criterion=check_criterion(criterion))
