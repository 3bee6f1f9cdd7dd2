"""CLVA: Cross-Layer Visual Anchors, as clva-lite reconstructs it.

The paper's method section is not public; this is our reading of its abstract and figure captions, with every
choice an option. Per decoding step and batch row, with V the visual positions and p_{l,h} the visual
distribution of the current query in layer l, head h (attention on V, renormalised):

* positive anchor  A+ = mean of p_{l,h} over vision-*sensitive* heads of the *intermediate* band;
* negative anchor  A- = mean of p_{l,h} over vision-*insensitive* heads of the *early* band;
* both are read in the same forward pass (those layers run before the deep ones), fresh at every step;
* in the *deep* band (all heads, or only sensitive ones), the current query's logits on visual keys become
  ``z'[j] = z[j] + alpha * A+[j] / max(A+) - beta * A-[j] / max(A-)``  (``mode="logit"``, the default): an
  additive bias, so it runs inside fused SDPA as an ``attn_mask`` with no eager attention;
* ``mode="prob"`` instead adds ``(alpha * A+ - beta * A-) * visual_share`` to the probabilities, clips at 0 and
  renormalises (expressed as the equivalent logit bias ``log(p'/p)``).

alpha = beta = 0 is the stock model. The prompt's KV cache is computed as the stock model does, except the last
prompt position, whose query is the first "current query".
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .capture import unwrap
from .function import QueryRow, _ignored_input, attached, row_logits, stacked_keys
from .heads import DEFAULT_BANDS, HeadClasses, band_layers, check_band, check_criterion, visual_focus
from .spans import VisualSpan

Band = tuple[float, float] | range | list[int]
MAX_WEIGHT = 20.0


@dataclass(frozen=True)
class CLVAConfig:
    """CLVA's options. Bands are depth fractions ``(start, end)`` or explicit layer ranges.

    alpha, beta: log-factors applied at the strongest positive / negative anchor patch (0 <= w <= 20).
    head_source: ``"calibrated"`` (head classes fitted on the calibration split, passed to :func:`clva`) or
        ``"per-input"`` (at each step, each anchor layer's top/bottom ``head_fraction`` of heads by the criterion).
    head_criterion: what makes a head vision-sensitive (:data:`~clva_lite.attention.heads.CRITERIA`): ``"share"``,
        ``"focus"`` or ``"share_focus"``; ``None`` takes the calibrated head classes' own criterion (``"share"``
        per input).
    head_rule, head_fraction: how calibrated head classes are chosen (see
        :class:`~clva_lite.attention.heads.HeadClasses`).
    mode: ``"logit"`` (additive bias on logits) or ``"prob"`` (shift of probabilities, for the ablation).
    apply_to: ``"all"`` deep heads, or only the deep band's ``"sensitive"`` heads.
    """

    alpha: float = 1.0
    beta: float = 1.0
    early: Band = DEFAULT_BANDS["early"]
    intermediate: Band = DEFAULT_BANDS["intermediate"]
    deep: Band = DEFAULT_BANDS["deep"]
    head_source: str = "calibrated"
    head_criterion: str | None = None
    head_rule: str = "topk"
    head_fraction: float = 0.25
    mode: str = "logit"
    apply_to: str = "all"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or not 0 <= value <= MAX_WEIGHT):
                raise ValueError(
                    f"{name}={value!r} is out of range: CLVA weights are log-factors in [0, {MAX_WEIGHT}] "
                    "(0 switches that anchor off)"
                )
        choices = {"head_source": ("calibrated", "per-input"), "head_rule": ("topk", "threshold"),
                   "mode": ("logit", "prob"), "apply_to": ("all", "sensitive")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; use one of {allowed}")
        if not 0 < self.head_fraction <= 0.5:
            raise ValueError(f"head_fraction={self.head_fraction} must be in (0, 0.5]")
        if self.head_criterion is not None:
            check_criterion(self.head_criterion)
        for name in ("early", "intermediate", "deep"):
            check_band(getattr(self, name), name)

    def layers(self, num_layers: int) -> dict[str, list[int]]:
        """The three bands as layer lists for a ``num_layers``-deep decoder; clear errors when they do not fit."""
        bands = {name: band_layers(getattr(self, name), num_layers, name)
                 for name in ("early", "intermediate", "deep")}
        for a, b in (("early", "intermediate"), ("early", "deep"), ("intermediate", "deep")):
            shared = sorted(set(bands[a]) & set(bands[b]))
            if shared:
                raise ValueError(f"the {a} and {b} bands overlap in layers {shared}; make them disjoint")
        if max(bands["early"] + bands["intermediate"]) >= min(bands["deep"]):
            raise ValueError(
                "the deep band must come after the early and intermediate bands: the anchors are read in the same "
                f"forward pass before the deep layers use them (got {bands})"
            )
        return bands


class CLVAIntervention:
    """The per-step state of CLVA inside the attention function (see :mod:`clva_lite.attention.function`)."""

    def __init__(self, config: CLVAConfig, num_layers: int, num_heads: int, heads: HeadClasses | None):
        self.config = config
        self.bands = config.layers(num_layers)
        self._early = set(self.bands["early"])
        self._intermediate = set(self.bands["intermediate"])
        self._deep = set(self.bands["deep"])
        self.positive_heads = self.negative_heads = self.deep_heads = None
        self._weights: dict[int, torch.Tensor] = {}  # calibrated: layer -> (heads,) weight in its anchor's mean
        if config.head_source == "calibrated":
            if heads is None:
                raise ValueError(
                    "CLVAConfig(head_source='calibrated') needs head classes: pass heads=clva_lite.calibrate_heads("
                    "...) fitted on the calibration split, or use CLVAConfig(head_source='per-input')"
                )
            if tuple(heads.visual_share.shape) != (num_layers, num_heads):
                raise ValueError(
                    f"head classes are for {tuple(heads.visual_share.shape)} layers x heads, the model has "
                    f"{(num_layers, num_heads)}"
                )
            self.criterion = config.head_criterion or heads.criterion
            classes = heads.with_criterion(self.criterion, rule=config.head_rule, fraction=config.head_fraction)
            self.positive_heads = classes.sensitive(self.bands["intermediate"])
            self.negative_heads = classes.insensitive(self.bands["early"])
            self.deep_heads = classes.sensitive(self.bands["deep"])
            for name, mask in (("positive", self.positive_heads), ("negative", self.negative_heads)):
                if not bool(mask.any()):
                    raise ValueError(f"the {name} anchor has no head under rule {config.head_rule!r}; relax it")
                weights = mask.float() / mask.sum()
                for layer in self.bands["intermediate" if name == "positive" else "early"]:
                    self._weights[layer] = weights[layer]
        else:
            self.criterion = config.head_criterion or "share"
        self.needs_visual_share = config.head_source == "per-input" and self.criterion != "focus"
        self._anchor_kinds: tuple[str, ...] = ()
        self._anchor_values: torch.Tensor | None = None  # (kinds, batch, V), the last step's anchors
        self._rows: list[tuple[int, QueryRow]] = []  # calibrated: this step's anchor rows, both bands
        self._coefficients: dict[tuple, torch.Tensor] = {}  # (kinds, device) -> (kinds, 1, 1): alpha, -beta
        self._prompt = -1
        self._plans: dict[tuple, dict] = {}  # this prompt's anchor heads and their image keys (see _anchor_plan)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}
        self._bias: torch.Tensor | None = None
        self._span: VisualSpan | None = None  # the span of this step's anchor rows

    @property
    def positive_anchor(self) -> torch.Tensor | None:
        """(batch, V): the last step's A+ (``None`` when alpha = 0 switched it off)."""
        return self._anchor("positive")

    @property
    def negative_anchor(self) -> torch.Tensor | None:
        """(batch, V): the last step's A- (``None`` when beta = 0 switched it off)."""
        return self._anchor("negative")

    @property
    def bias_row(self) -> torch.Tensor | None:
        """(batch, V): the last step's additive bias on the deep layers' visual logits (``mode="logit"``, before any
        ``apply_to`` head mask); ``None`` before the first deep layer ran."""
        return None if self._bias is None else self._bias[:, 0]

    def _anchor(self, kind: str) -> torch.Tensor | None:
        if kind not in self._anchor_kinds:
            return None
        return self._anchor_values[self._anchor_kinds.index(kind)]

    # Intervention protocol ---------------------------------------------------------------------------------------
    def begin_step(self, step: int, prompt: int = 0) -> None:
        if prompt != self._prompt:
            self._prompt = prompt
            self._plans.clear()
        self._rows = []
        self._sums.clear()
        self._counts.clear()
        self._bias = None

    def wants_visual(self, layer: int) -> bool:
        return (layer in self._intermediate and self.config.alpha > 0) or (layer in self._early and
                                                                           self.config.beta > 0)

    def wants_logits(self, layer: int) -> bool:
        return self.config.mode == "prob" and layer in self._deep

    def acts_on(self, layer: int) -> bool:
        return layer in self._deep

    def _per_input_heads(self, kind: str, distribution: torch.Tensor, share: torch.Tensor | None) -> torch.Tensor:
        """(batch, heads) 0/1 selection of this step's top (positive) or bottom (negative) heads by the criterion."""
        focus = visual_focus(distribution) if self.criterion != "share" else None
        score = share if self.criterion == "share" else focus if self.criterion == "focus" else share * focus
        count = max(1, round(self.config.head_fraction * score.shape[1]))
        order = score.argsort(dim=1, descending=(kind == "positive"))[:, :count]
        return torch.zeros_like(score).scatter_(1, order, 1.0)

    def observe_visual(self, layer: int, row: QueryRow, span: VisualSpan) -> None:
        kind = "positive" if layer in self._intermediate else "negative"
        if self.config.head_source == "calibrated":  # computed for both bands at once, in _calibrated_anchors
            self._rows.append((layer, row))
            self._span = span
            return
        if not self.needs_visual_share and row.logits is None:
            row = row._replace(key=span.take_keys(row.key))
        logits = row_logits([row])[0]  # (batch, heads, kv or V)
        if self.needs_visual_share:
            visual = span.take(logits)
            share = (visual.logsumexp(-1) - logits.logsumexp(-1)).exp()
        else:
            visual, share = logits, None
        distribution = torch.softmax(visual, dim=-1)
        selection = self._per_input_heads(kind, distribution, share)
        contribution = (distribution * selection.unsqueeze(-1)).sum(1)  # (batch, V)
        self._sums[kind] = self._sums.get(kind, 0) + contribution
        self._counts[kind] = self._counts.get(kind, 0) + selection.sum(1, keepdim=True)

    def _calibrated_anchors(self) -> tuple[tuple[str, ...], torch.Tensor | None]:
        """This step's anchors from one batched pass over the anchor heads only (the calibrated classes pick a few
        heads per band): their current-query rows over the visual keys, a softmax, and each band's mean. Returns the
        kinds that are switched on and their anchors stacked, (kinds, batch, V)."""
        if not self._rows:
            return (), None
        rows = [row for _, row in self._rows]
        layers = tuple(layer for layer, _ in self._rows)
        batch, heads = (rows[0].query if rows[0].query is not None else rows[0].logits).shape[:2]
        plan = self._plans.get((layers, batch))
        if plan is None:
            plan = self._plans[(layers, batch)] = self._anchor_plan(layers, batch, heads)
        kinds, index, weights = plan["kinds"], plan["index"], plan["weights"]
        if all(r.logits is None for r in rows):
            if "keys" not in plan:  # image keys do not change while a prompt decodes: the anchor heads' are taken once
                keys = stacked_keys([r._replace(key=self._span.take_keys(r.key)) for r in rows])
                plan["keys"] = keys.index_select(0, index)  # (S * batch, d, V)
            query = torch.stack([r.query for r in rows]).view(-1, 1, rows[0].query.shape[-1])
            query = query.index_select(0, index).float()  # (S * batch, 1, d)
            logits = torch.baddbmm(_ignored_input(query.device), query, plan["keys"], beta=0, alpha=rows[0].scale)
        else:  # rows that came with their visual logits
            rows = [r if r.logits is not None else r._replace(key=self._span.take_keys(r.key)) for r in rows]
            stacked = row_logits(rows)  # (layers, batch, heads, V)
            logits = stacked.reshape(-1, stacked.shape[-1]).index_select(0, index)
        distribution = torch.softmax(logits, dim=-1).view(weights.shape[1], -1)  # (S, batch * V)
        return kinds, torch.matmul(weights, distribution).view(len(kinds), batch, -1)

    def _anchor_plan(self, layers: tuple[int, ...], batch: int, heads: int) -> dict:
        """For the anchor layers observed this step: the kinds switched on, the flat index of the S anchor heads'
        rows among the layers' stacked (layers * batch * heads) rows, ordered (head, batch), and the (kinds, S)
        weights that average each band's anchor heads. The anchor heads' image keys join it at the first step."""
        kinds = tuple(kind for kind, band in (("positive", self._intermediate), ("negative", self._early))
                      if any(layer in band for layer in layers))
        selected = [(i, head, "positive" if layer in self._intermediate else "negative")
                    for i, layer in enumerate(layers) for head in self._weights[layer].nonzero().flatten().tolist()]
        device = self._span.positions.device
        index = torch.tensor([(i * batch + b) * heads + head for i, head, _ in selected for b in range(batch)],
                             device=device)
        weights = torch.tensor([[float(self._weights[layers[i]][head]) if kind == wanted else 0.0
                                 for i, head, kind in selected] for wanted in kinds], device=device)
        return {"kinds": kinds, "index": index, "weights": weights}

    def _anchors(self) -> tuple[tuple[str, ...], torch.Tensor | None]:
        """The kinds of this step's anchors that are switched on, and the anchors stacked, (kinds, batch, V)."""
        if self.config.head_source == "calibrated":
            return self._calibrated_anchors()
        kinds = tuple(kind for kind in ("positive", "negative") if kind in self._sums)
        if not kinds:
            return (), None
        return kinds, torch.stack([self._sums[kind] / self._counts[kind].clamp_min(1) for kind in kinds])

    def _shift(self, kinds: tuple[str, ...], anchors: torch.Tensor | None, span: VisualSpan) -> torch.Tensor:
        """``alpha * A+ / max(A+) - beta * A- / max(A-)`` ("logit" mode; "prob" mode leaves out the max), (batch, V).
        anchors: (kinds, batch, V)."""
        if not kinds:
            return torch.zeros(span.batch_size, span.num_visual, device=span.positions.device)
        key = (kinds, anchors.device)
        if key not in self._coefficients:
            signed = {"positive": self.config.alpha, "negative": -self.config.beta}
            self._coefficients[key] = torch.tensor([signed[kind] for kind in kinds],
                                                   device=anchors.device).view(-1, 1, 1)
        scale = self._coefficients[key]
        if self.config.mode == "logit":
            scale = scale / anchors.amax(-1, keepdim=True).clamp_min(1e-12)
        return (anchors * scale).sum(0)

    def bias(self, layer: int, logits: torch.Tensor | None, span: VisualSpan) -> torch.Tensor | None:
        if self._bias is None:
            kinds, anchors = self._anchors()
            self._anchor_kinds, self._anchor_values = kinds, anchors
            self._bias = self._shift(kinds, anchors, span).unsqueeze(1)  # (batch, 1, V)
        bias = self._bias
        if self.config.mode == "prob":
            visual_logits = span.take(logits)
            log_p = visual_logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            p = log_p.exp()
            shifted = p + bias * p.sum(-1, keepdim=True)
            bias = torch.where(shifted > 0, shifted.clamp_min(1e-30).log() - log_p,
                               torch.full_like(p, torch.finfo(torch.float32).min / 2))
        if self.config.apply_to == "sensitive":
            bias = bias * self.deep_heads[layer].to(bias.device, bias.dtype).view(1, -1, 1)
        return bias


@contextmanager
def clva(model, config: CLVAConfig | None = None, *, heads: HeadClasses | None = None):
    """Run ``model`` with CLVA inside the block; the model is restored in ``finally``.

    ``model``: a :class:`~clva_lite.models.loading.LoadedModel` or Hugging Face model. ``heads``: head classes fitted on
    the calibration split (needed unless ``config.head_source == "per-input"``). Yields the
    :class:`CLVAIntervention`, whose ``positive_anchor`` / ``negative_anchor`` hold the last step's anchors.
    Composes with :func:`clva_lite.capture` (enter either first) to see deep attention after the intervention.
    """
    config = config or CLVAConfig()
    hf_model = unwrap(model)
    text_config = getattr(hf_model.config, "text_config", hf_model.config)
    intervention = CLVAIntervention(config, int(text_config.num_hidden_layers),
                                    int(text_config.num_attention_heads), heads)
    with attached(hf_model, intervention=intervention):
        yield intervention
