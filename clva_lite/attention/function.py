"""One attention function, registered with transformers, that capture and interventions plug into.

``clva_lite`` never edits model source. It registers the name ``"clva_lite"`` in transformers'
``AttentionInterface`` (with ``sdpa_mask`` in ``AttentionMaskInterface``, or padding masks would be dropped) and
switches a model's *text* sub-config to it for the life of a context manager. The function computes the output
with stock fused SDPA; when a capture or an intervention is attached to the model it also computes, per decoder
layer, the one attention row of the *current query* (the last position): ``z = q_last . K^T * scale + mask``,
shape (batch, heads, kv). Never the full (seq x seq) matrix.

Per-model state is kept in ``_STATES``, keyed by the text config the attention modules share. Vision-tower
attention has no ``layer_idx`` and goes straight to stock SDPA.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .spans import VisualSpan, find_visual_span

ATTENTION_NAME = "clva_lite"


class Observer(Protocol):
    """Reads the current-query attention row of some layers (e.g. the capture recorder)."""

    def wants_layer(self, layer: int) -> bool: ...

    def observe(self, step: int, layer: int, probs: torch.Tensor, span: VisualSpan) -> None:
        """``probs``: post-softmax row (batch, heads, kv), after any intervention."""


class Intervention(Protocol):
    """Changes the current-query row's logits on visual keys in some layers (CLVA, PAI)."""

    def begin_step(self, step: int) -> None: ...

    def wants_probs(self, layer: int) -> bool:
        """Needs this layer's stock post-softmax visual row (anchors)."""

    def acts_on(self, layer: int) -> bool:
        """Adds a bias in this layer."""

    def observe_visual(self, layer: int, visual_probs: torch.Tensor) -> None:
        """``visual_probs``: (batch, heads, V) attention on visual keys (not renormalised)."""

    def wants_logits(self, layer: int) -> bool:
        """Needs this layer's pre-softmax row to compute its bias (PAI, CLVA's "prob" mode)."""

    def bias(self, layer: int, logits: torch.Tensor | None, span: VisualSpan) -> torch.Tensor | None:
        """Additive bias on visual keys, (batch, heads or 1, V), or ``None`` to leave the layer stock.

        ``logits``: the layer's pre-softmax row (batch, heads, kv) when ``wants_logits(layer)``, else ``None``.
        """


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

    def rows_for(self, batch: int) -> VisualSpan:
        if self.span is None:
            raise RuntimeError("no visual span: the model ran no prefill with image tokens inside the context")
        return self.span.expanded_to(batch)


_STATES: dict[int, AttentionState] = {}


def _registered() -> None:
    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, clva_attention_forward)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def _stock(module, query, key, value, attention_mask, **kwargs):
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _last_row_mask(attention_mask: torch.Tensor | None, batch: int, kv: int, device) -> torch.Tensor:
    """Additive float mask of the last query row, (batch, 1, kv): 0 where attended, a large negative elsewhere."""
    if attention_mask is None:
        return torch.zeros(batch, 1, kv, device=device)
    row = attention_mask[:, :, -1, :]
    if row.dtype == torch.bool:
        return torch.zeros(row.shape, device=device).masked_fill(~row, torch.finfo(torch.float32).min)
    return row.float()


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
        state.step += 1
        if state.intervention is not None:
            state.intervention.begin_step(state.step)
    intervention = state.intervention
    observers = [o for o in state.observers if o.wants_layer(layer)]
    wants_probs = intervention is not None and intervention.wants_probs(layer)
    wants_logits = intervention is not None and intervention.wants_logits(layer)
    may_bias = intervention is not None and intervention.acts_on(layer)
    if not (observers or wants_probs or may_bias):
        return _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    batch, heads, q_length, head_dim = query.shape
    kv = key.shape[2]
    span = state.rows_for(batch)
    scale = scaling if scaling is not None else head_dim**-0.5
    mask_row = _last_row_mask(attention_mask, batch, kv, query.device)  # (batch, 1, kv)
    groups = heads // key.shape[1]
    logits = None
    if observers or wants_probs or wants_logits:
        keys = repeat_kv(key, groups) if groups > 1 else key
        logits = torch.einsum("bhd,bhkd->bhk", query[:, :, -1].float(), keys.float()) * scale + mask_row

    bias = None
    if may_bias:
        bias = intervention.bias(layer, logits if wants_logits else None, span)

    if bias is None:
        output, _ = _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        probs = torch.softmax(logits, dim=-1) if logits is not None else None
    else:
        full_bias = torch.zeros(batch, heads, kv, device=query.device)
        full_bias.scatter_add_(2, span.index_for(heads), bias.float().expand(batch, heads, -1))
        row_mask = (mask_row + full_bias).unsqueeze(2).to(query.dtype)  # (batch, heads, 1, kv)
        row_kwargs = {k: v for k, v in kwargs.items() if k != "is_causal"}
        last, _ = _stock(module, query[:, :, -1:], key, value, row_mask, dropout=dropout, scaling=scaling,
                         is_causal=False, **row_kwargs)
        if q_length == 1:
            output = last
        else:
            output, _ = _stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                               **kwargs)
            output = output.clone()
            output[:, -1:] = last
        probs = torch.softmax(logits + full_bias, dim=-1) if logits is not None else None

    if wants_probs:
        intervention.observe_visual(layer, probs.gather(2, span.index_for(heads)))
    for observer in observers:
        observer.observe(state.step, layer, probs, span)
    return output, None


def _decoder_config(model) -> Any:
    config = model.config
    return getattr(config, "text_config", None) or config


def _span_hook(model, state: AttentionState):
    """Forward pre-hook: a forward pass whose ``input_ids`` hold image tokens (a prefill) sets the visual span."""

    def hook(module, args, kwargs):
        if state.paused:
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return None
        if bool((input_ids == int(model.config.image_token_id)).any()):
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
        yield state
    finally:
        if span is not None:
            state.pinned -= 1
        if observer is not None and observer in state.observers:
            state.observers.remove(observer)
        if intervention is not None and state.intervention is intervention:
            state.intervention = None
        if created:
            _STATES.pop(key, None)
            if handle is not None:
                handle.remove()
            model.set_attn_implementation({"text_config": state.original_implementation or "sdpa"})


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
