"""One attention function, registered with transformers, that capture and interventions plug into.

``clva_lite`` never edits model source. It registers the name ``"clva_lite"`` in transformers'
``AttentionInterface`` (with ``sdpa_mask`` in ``AttentionMaskInterface``, or padding masks would be dropped) and
switches a model's *text* sub-config to it for the life of a context manager. The function computes the output
with stock fused SDPA; when a capture or an intervention is attached to the model it also computes, per decoder
layer that something asked for, the one attention row of the *current query* (the last position):
``z = q_last . K^T * scale + mask``, shape (batch, heads, kv), or only its visual part when that is all an
intervention reads. Never the full (seq x seq) matrix. What each layer needs is planned once per attachment, the
last row's masks are built once per step, and observers keep the row and do their work after the pass.

Per-model state is kept in ``_STATES``, keyed by the text config the attention modules share. Vision-tower
attention has no ``layer_idx`` and goes straight to stock SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .spans import VisualSpan, find_visual_span, image_token_id

ATTENTION_NAME = "clva_lite"


class QueryRow(NamedTuple):
    """One layer's current-query attention row, as its parts; :func:`row_logits` computes it when an observer asks.
    The tensors are the layer's own (views, no copies); hold a row no longer than the step."""

    query: torch.Tensor  # (batch, heads, 1, d): the current query
    key: torch.Tensor  # (batch, kv_heads, kv, d)
    scale: float
    groups: int  # heads per kv head (grouped-query attention)
    mask: torch.Tensor | None  # (batch, heads, kv) additive mask of the last row; None: keys are never masked
    bias: torch.Tensor | None  # (batch, heads, kv) the intervention's bias on the key axis, if any
    logits: torch.Tensor | None  # (batch, heads, kv) when the function already computed the row


def stacked_keys(rows: list[QueryRow]) -> torch.Tensor:
    """The rows' keys as one float32 (layers * batch * heads, d, kv) operand of :func:`row_logits` (GQA expanded).
    Keys of the image tokens do not change during a generation, so an intervention may keep this between steps."""
    first = rows[0]
    batch, heads, _, dim = first.query.shape
    keys = torch.stack([r.key for r in rows])  # (layers, batch, kv_heads, kv, d)
    if first.groups > 1:
        keys = keys[:, :, :, None].expand(-1, -1, -1, first.groups, -1, -1)
    return keys.reshape(len(rows) * batch * heads, keys.shape[-2], dim).transpose(1, 2).float()


def _biased(row: QueryRow, logits: torch.Tensor) -> torch.Tensor:
    return logits + row.bias if row.bias is not None else logits


def row_logits(rows: list[QueryRow], keys_t: torch.Tensor | None = None) -> torch.Tensor:
    """The masked pre-softmax rows after any bias of several layers of one step: (layers, batch, heads, kv), float32.

    One fused batched matmul (baddbmm) for all rows that share shapes, scale and mask, as a step's decoder layers
    do: per step a handful of kernel launches instead of a handful per layer. ``keys_t``: the rows'
    :func:`stacked_keys` (or of a slice of their keys, e.g. the visual ones), when the caller kept them.
    """
    todo = [r for r in rows if r.logits is None]
    if not todo:
        return torch.stack([r.logits for r in rows])
    first = todo[0]
    uniform = all(r.key.shape == first.key.shape and r.scale == first.scale and r.groups == first.groups
                  and r.mask is first.mask for r in todo)
    if not uniform:
        return torch.stack([r.logits if r.logits is not None else _biased(r, _scores(r.query, r.key, r.groups,
                                                                                   r.scale, mask=r.mask))
                            for r in rows])
    batch, heads, _, dim = first.query.shape
    count = len(todo)
    query = torch.stack([r.query for r in todo]).view(count * batch * heads, 1, dim).float()
    if keys_t is None or len(todo) != len(rows):
        keys_t = stacked_keys(todo)
    kv = keys_t.shape[2]
    if first.mask is None:
        computed = torch.baddbmm(_ignored_input(query.device), query, keys_t, beta=0, alpha=first.scale)
    else:
        mask = first.mask.expand(count, batch, heads, kv).reshape(count * batch * heads, 1, kv)
        computed = torch.baddbmm(mask, query, keys_t, alpha=first.scale)
    computed = computed.view(count, batch, heads, kv)
    if len(todo) == len(rows) and all(r.bias is None for r in rows):
        return computed
    fresh = iter(computed.unbind(0))
    out = []
    for r in rows:
        logits = r.logits if r.logits is not None else next(fresh)
        if r.logits is None and r.bias is not None:
            logits = logits + r.bias
        out.append(logits)
    return torch.stack(out)


class Observer(Protocol):
    """Reads the current-query attention row of some layers (e.g. the capture recorder)."""

    def wants_layer(self, layer: int) -> bool: ...

    def observe(self, step: int, layer: int, row: QueryRow, span: VisualSpan,
                attention_mask: torch.Tensor | None) -> None:
        """``row``: this layer's current-query row after any intervention, without its mask; ``attention_mask`` is
        the layer's mask as the model passed it (``row_logits([row._replace(mask=last_row_mask(...))])`` computes
        the row; softmax gives the attention). Observers batch the work, off the per-layer path."""


class Intervention(Protocol):
    """Changes the current-query row's logits on visual keys in some layers (CLVA, PAI)."""

    needs_visual_share: bool  # observe_visual needs the share of attention on the image (then rows hold all keys)

    def begin_step(self, step: int, prompt: int) -> None:
        """``prompt`` counts the prefills with image tokens so far: it changes when a new prompt starts."""

    def wants_visual(self, layer: int) -> bool:
        """Reads this layer's stock visual attention (anchors)."""

    def observe_visual(self, layer: int, row: QueryRow, span: VisualSpan) -> None:
        """``row``: the layer's current-query row without mask: over all keys (``span.take_keys(row.key)`` gives the
        visual ones, and the current query sees every image token, so they need no mask), with the mask when
        ``needs_visual_share``, or with its visual ``logits`` when the function computed them. ``row_logits``
        computes it, batched over layers, when the intervention needs it (CLVA: before the first deep layer)."""

    def wants_logits(self, layer: int) -> bool:
        """Needs this layer's pre-softmax row to compute its bias (PAI, CLVA's "prob" mode)."""

    def acts_on(self, layer: int) -> bool:
        """Adds a bias in this layer."""

    def bias(self, layer: int, logits: torch.Tensor | None, span: VisualSpan) -> torch.Tensor | None:
        """Additive bias on visual keys, (batch, heads or 1, V), or ``None`` to leave the layer stock.

        ``logits``: the layer's pre-softmax row (batch, heads, kv) when ``wants_logits(layer)``, else ``None``.
        Returning the same tensor object for several layers of a step lets the function build its mask once.
        """


@dataclass(frozen=True)
class LayerPlan:
    """What the attached observers and intervention want from one layer; computed once per attachment."""

    observers: tuple
    wants_visual: bool
    full_row: bool  # the intervention's bias needs the whole (batch, heads, kv) logit row
    wants_logits: bool
    acts: bool


@dataclass
class AttentionState:
    """What is attached to one model: its visual span, observers and at most one intervention."""

    span: VisualSpan | None
    first_layer: int
    observers: list[Observer] = field(default_factory=list)
    intervention: Intervention | None = None
    paused: int = 0
    pinned: int = 0  # active attachments that were given inputs (their span must not be swapped under them)
    step: int = -1
    original_implementation: str | None = None
    prompt: int = 0  # prefills with image tokens so far
    plans: dict[int, LayerPlan | None] = field(default_factory=dict)
    step_cache: dict = field(default_factory=dict)  # masks built once per step, keyed by the objects they came from
    step_keys: int | None = None  # key length of this step's first planned layer (all must match)
    cache_epoch: int = 0  # forward passes that started a fresh KV cache (a prefill, or any pass without a cache)

    def rows_for(self, batch: int) -> VisualSpan:
        if self.span is None:
            raise RuntimeError("no visual span: the model ran no prefill with image tokens inside the context")
        return self.span.expanded_to(batch)

    def begin_step(self) -> None:
        self.step += 1
        self.step_cache.clear()
        self.step_keys = None
        if self.intervention is not None:
            self.intervention.begin_step(self.step, self.prompt)

    def plan(self, layer: int) -> LayerPlan | None:
        """``None`` when nothing attached wants ``layer`` (it then runs stock SDPA)."""
        if layer not in self.plans:
            observers = tuple(o for o in self.observers if o.wants_layer(layer))
            iv = self.intervention
            wants_visual = iv is not None and iv.wants_visual(layer)
            wants_logits = iv is not None and iv.wants_logits(layer)
            acts = iv is not None and iv.acts_on(layer)
            full_row = wants_logits
            active = bool(observers) or wants_visual or acts
            self.plans[layer] = LayerPlan(observers, wants_visual, full_row, wants_logits, acts) if active else None
        return self.plans[layer]

    def mask_row(self, attention_mask: torch.Tensor | None, batch: int, heads: int, kv: int, device) -> torch.Tensor:
        """Additive float mask of the last query row, (batch, heads, kv) contiguous, built once per step and mask."""
        key = ("mask", id(attention_mask), batch, heads, kv)
        entry = self.step_cache.get(key)
        if entry is None or entry[0] is not attention_mask:  # holding the mask keeps its id from being reused
            row = last_row_mask(attention_mask, batch, kv, device).expand(batch, heads, kv).contiguous()
            entry = (attention_mask, row)
            self.step_cache[key] = entry
        return entry[1]

    def biased_row_mask(self, bias: torch.Tensor, attention_mask, span: VisualSpan, batch: int, heads: int, kv: int,
                        dtype, device) -> torch.Tensor:
        """The last row's SDPA mask with the bias on the visual keys, (batch, heads or 1, 1, kv), built once per step
        for each bias object (CLVA returns one for all deep layers)."""
        entry = self._bias_entry(bias, attention_mask, heads, kv)
        if "row_mask" not in entry:
            start = span.start
            if start is not None and attention_mask is None:  # nothing masked (decoding one unpadded prompt)
                # one op: the bias padded with zeros to the key axis, (batch, heads or 1, kv); SDPA broadcasts heads
                row_mask = torch.nn.functional.pad(bias.float(), (start, kv - start - span.num_visual))
            elif start is not None:
                row_mask = self.mask_row(attention_mask, batch, heads, kv, device).clone()
                row_mask[..., start:start + span.num_visual] += bias.float()
            else:
                mask = self.mask_row(attention_mask, batch, heads, kv, device)
                row_mask = mask + self.placed_bias(bias, attention_mask, span, batch, heads, kv)
            entry["row_mask"] = row_mask.unsqueeze(2).to(dtype)
        return entry["row_mask"]

    def placed_bias(self, bias: torch.Tensor, attention_mask, span: VisualSpan, batch: int, heads: int,
                    kv: int) -> torch.Tensor:
        """The bias placed on the key axis, (batch, heads, kv) float32, once per step and bias object."""
        entry = self._bias_entry(bias, attention_mask, heads, kv)
        if "placed" not in entry:
            entry["placed"] = span.place(bias.float().expand(batch, heads, -1), kv)
        return entry["placed"]

    def _bias_entry(self, bias: torch.Tensor, attention_mask, heads: int, kv: int) -> dict:
        key = ("bias", id(bias), id(attention_mask), heads, kv)
        entry = self.step_cache.get(key)
        if entry is None or entry["bias"] is not bias or entry["mask"] is not attention_mask:
            entry = self.step_cache[key] = {"bias": bias, "mask": attention_mask}  # held: ids stay unique
        return entry


_STATES: dict[int, AttentionState] = {}


def _registered() -> None:
    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, clva_attention_forward)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def _stock(module, query, key, value, attention_mask, **kwargs):
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def last_row_mask(attention_mask: torch.Tensor | None, batch: int, kv: int, device) -> torch.Tensor:
    """Additive float mask of the last query row, (batch, 1, kv): 0 where attended, a large negative elsewhere."""
    if attention_mask is None:
        return torch.zeros(batch, 1, kv, device=device)
    row = attention_mask[:, :, -1, :]
    if row.dtype == torch.bool:
        return torch.zeros(row.shape, device=device).masked_fill(~row, torch.finfo(torch.float32).min)
    return row.float()


_NO_INPUT: dict[torch.device, torch.Tensor] = {}


def _ignored_input(device) -> torch.Tensor:
    """baddbmm's input when beta=0 (ignored, but it must be a tensor on the device): one per device."""
    if device not in _NO_INPUT:
        _NO_INPUT[device] = torch.zeros(1, 1, 1, device=device)
    return _NO_INPUT[device]


def _scores(query_last: torch.Tensor, keys: torch.Tensor, groups: int, scale: float,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """q . K^T * scale (+ mask) for the last query, as one fused batched matmul (baddbmm).

    query_last: (batch, heads, 1, d); keys: (batch, kv_heads, n, d); mask: (batch, heads, n) contiguous float.
    Returns (batch, heads, n) in float32.
    """
    batch, heads, _, dim = query_last.shape
    keys = repeat_kv(keys, groups) if groups > 1 else keys
    n = keys.shape[2]
    query = query_last.float().reshape(batch * heads, 1, dim)
    keys_t = keys.float().reshape(batch * heads, n, dim).transpose(1, 2)
    if mask is None:
        result = torch.baddbmm(_ignored_input(query.device), query, keys_t, beta=0, alpha=scale)
    else:
        result = torch.baddbmm(mask.view(batch * heads, 1, n), query, keys_t, alpha=scale)
    return result.view(batch, heads, n)


def clva_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Drop-in for SDPA. query: (batch, heads, q, d); key/value: (batch, kv_heads, kv, d)."""
    config = getattr(module, "config", None)
    state = _STATES.get(id(config)) if config is not None else None
    layer = getattr(module, "layer_idx", None)
    if state is None or state.paused or layer is None:
        return _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    if layer == state.first_layer:
        state.begin_step()
    plan = state.plan(layer)
    if plan is None:
        return _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    intervention = state.intervention
    batch, heads, q_length, head_dim = query.shape
    kv = key.shape[2]
    if state.step_keys is None:
        state.step_keys = kv
    elif kv != state.step_keys:
        # Sliding-window layers (Gemma 3) keep only their window in the KV cache, so key slots stop being absolute
        # positions and the visual positions no longer index them.
        raise ValueError(
            f"decoder layer {layer} attends over {kv} keys where another layer of this step has {state.step_keys}: a "
            f"sliding-window layer whose window (sliding_window={getattr(config, 'sliding_window', None)}) is shorter "
            "than prompt + generation. clva_lite needs absolute key positions: use shorter prompts or fewer new "
            "tokens, or restrict capture/CLVA layers to full-attention layers")
    span = state.rows_for(batch)
    scale = scaling if scaling is not None else head_dim**-0.5
    groups = heads // key.shape[1]
    query_last = query[:, :, -1:]
    logits = full_bias = None
    if plan.full_row:
        logits = _scores(query_last, key, groups, scale, mask=state.mask_row(attention_mask, batch, heads, kv,
                                                                             query.device))

    bias = intervention.bias(layer, logits if plan.wants_logits else None, span) if plan.acts else None
    if bias is None:
        output, _ = _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    else:
        row_mask = state.biased_row_mask(bias, attention_mask, span, batch, heads, kv, query.dtype, query.device)
        if logits is not None or plan.observers or (plan.wants_visual and intervention.needs_visual_share):
            full_bias = state.placed_bias(bias, attention_mask, span, batch, heads, kv)
        row_kwargs = {k: v for k, v in kwargs.items() if k != "is_causal"}
        last, _ = _stock(module, query_last, key, value, row_mask, dropout=dropout, scaling=scaling,
                         is_causal=False, **row_kwargs)
        if q_length == 1:
            output = last
        else:
            output, _ = _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                               **kwargs)
            output = output.clone()
            output[:, -1:] = last
        if logits is not None:
            logits = logits + full_bias

    if plan.wants_visual:
        if intervention.needs_visual_share:
            row = QueryRow(query_last, key, scale, groups,
                           state.mask_row(attention_mask, batch, heads, kv, query.device), full_bias, logits)
        else:
            row = QueryRow(query_last, key, scale, groups, None, None, None)  # all keys: the observer slices
            if logits is not None:
                row = row._replace(logits=span.take(logits))
        intervention.observe_visual(layer, row, span)
    if plan.observers:
        row = QueryRow(query_last, key, scale, groups, None, full_bias, logits)
        for observer in plan.observers:
            observer.observe(state.step, layer, row, span, attention_mask)
    return output, None


def _decoder_config(model) -> Any:
    config = model.config
    return getattr(config, "text_config", None) or config


def _span_hook(model, state: AttentionState):
    """Forward pre-hook: a forward pass whose ``input_ids`` hold image tokens (a prefill) sets the visual span."""

    def hook(module, args, kwargs):
        if state.paused:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
            return None  # a decode step: a generated token that happens to be the image token starts no prompt
        state.cache_epoch += 1
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return None
        if bool((input_ids == image_token_id(model.config)).any()):
            state.prompt += 1
            inputs = {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask"),
                      "image_grid_thw": kwargs.get("image_grid_thw")}
            found = find_visual_span(model, inputs)
            # A span pinned from the caller's full inputs is kept when the tokens are the same: it knows more than
            # this forward's kwargs (e.g. Qwen2-VL's grid from image_grid_thw, which generate may not pass on).
            if not (state.pinned and state.span is not None and found.same_as(state.span)):
                state.span = found
        elif state.span is None:
            raise ValueError(
                "the prompt holds no image tokens, so there is no visual attention to capture or steer; build the "
                "inputs with an image (clva_lite.build_inputs, or the processor's chat template with an image entry)"
            )
        return None

    return hook


@contextmanager
def attached(model, span: VisualSpan | None = None, *, observer: Observer | None = None,
             intervention: Intervention | None = None):
    """Attach an observer and/or intervention to ``model`` (a Hugging Face model) for the duration of the block.

    The first attachment switches the text config to the ``clva_lite`` attention and adds a forward pre-hook that
    finds the visual span at each prefill; the last detachment restores the original implementation and removes
    the hook, in ``finally``, so an exception inside the block leaves the model stock.
    """
    _registered()
    text_config = _decoder_config(model)
    key = id(text_config)
    state = _STATES.get(key)
    created = state is None
    if created:
        original = text_config._attn_implementation
        if original not in (None, "sdpa", "eager", ATTENTION_NAME):
            raise ValueError(
                f"the model uses attn_implementation={original!r}; clva_lite computes attention with SDPA. "
                "Load the model with attn_implementation='sdpa' (or 'eager')."
            )
        state = AttentionState(span=span, first_layer=0, original_implementation=original)
    elif span is not None and state.pinned and state.span is not None and not span.same_as(state.span):
        raise ValueError(
            "a capture or intervention is already attached to this model for other inputs; nest contexts only "
            "over the same inputs"
        )
    if intervention is not None and state.intervention is not None:
        raise ValueError("an intervention (CLVA, PAI, ...) is already active on this model; nest at most one")
    handle = None
    try:
        if created:
            _STATES[key] = state
            handle = model.register_forward_pre_hook(_span_hook(model, state), with_kwargs=True)
            model.set_attn_implementation({"text_config": ATTENTION_NAME})
        if span is not None:
            if not state.pinned:
                state.span = span
            state.pinned += 1
        if observer is not None:
            state.observers.append(observer)
        if intervention is not None:
            state.intervention = intervention
        state.plans.clear()
        yield state
    finally:
        if span is not None:
            state.pinned -= 1
        if observer is not None and observer in state.observers:
            state.observers.remove(observer)
        if intervention is not None and state.intervention is intervention:
            state.intervention = None
        state.plans.clear()
        if created:
            _STATES.pop(key, None)
            if handle is not None:
                handle.remove()
            model.set_attn_implementation({"text_config": state.original_implementation or "sdpa"})


def begin_prompt(model, span: VisualSpan) -> None:
    """Tell what is attached to ``model`` that a new prompt starts whose image tokens are already in the KV cache.

    A generation that continues a cached image prefix (see :mod:`clva_lite.eval.prefix`) feeds only text tokens, so
    the span hook finds no image tokens and would take the pass for a decode step. ``span``: the visual positions
    of the full prompt (prefix + text), as :func:`~clva_lite.attention.spans.find_visual_span` finds them. Counts as
    a prefill: interventions drop what they kept for the previous prompt (e.g. CLVA's image keys). Nothing happens
    when nothing is attached.
    """
    state = _STATES.get(id(_decoder_config(model)))
    if state is None:
        return
    if state.pinned and state.span is not None and not span.same_as(state.span):
        raise ValueError("a capture pinned to other inputs is attached; capture the shared-prefix inputs instead")
    state.span = span
    state.prompt += 1
    state.cache_epoch += 1


@contextmanager
def paused(model):
    """Run extra forward passes (e.g. VCD's contrastive pass) without the attached capture or intervention."""
    state = _STATES.get(id(_decoder_config(model)))
    if state is None:
        yield
        return
    state.paused += 1
    try:
        yield
    finally:
        state.paused -= 1


def is_attached(model) -> bool:
    return id(_decoder_config(model)) in _STATES
