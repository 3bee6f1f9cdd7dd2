"""Record the current query's attention over the visual tokens, per decoding step, layer and head.

    with clva_lite.capture(model, inputs) as rec:
        model.generate(**inputs, max_new_tokens=8)
    rec.visual        # (steps, batch, layers, heads, V)
    rec.shares        # (steps, batch, layers, heads, 4): system / visual / prompt / generated
    rec.row(0).visual # (steps, layers, heads, V) for the first batch row

Step 0 is the prefill's last prompt token; step k > 0 is the k-th generated token's query. During the pass each
requested layer hands over its current query and keys (views, no copies). A KV cache only grows by appending, so the
keys a step saw are a prefix of the cache's final keys: the recorder keeps each step's queries and only the latest
keys, and computes all steps' rows of a layer in one matmul when ``visual`` or ``shares`` is first read (or when a
new forward pass starts a fresh cache), off the model's per-token path. Where that does not hold - an intervention
changed the row, or rows were expanded for beam search, whose cache reorders beams - the step's rows are computed at
once instead, in one fused batched matmul. Memory: the queries, one reference to the latest keys, and per step
O(layers x heads x keys) once computed; only the requested layers are kept.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .function import QueryRow, attached, last_row_mask, row_logits
from .spans import GROUPS, VisualSpan, find_visual_span


def unwrap(model):
    """The Hugging Face model inside a :class:`~clva_lite.models.loading.LoadedModel`, or the model itself."""
    return model.model if hasattr(model, "processor") and hasattr(model, "family") else model


@dataclass
class RowRecord:
    """One batch row's record. visual: (steps, layers, heads, V); shares: (steps, layers, heads, 4)."""

    visual: torch.Tensor
    shares: torch.Tensor
    layers: list[int]
    grid: tuple[int, int] | None

    def share(self, group: str) -> torch.Tensor:
        """(steps, layers, heads) attention mass on one of ``GROUPS``."""
        return self.shares[..., GROUPS.index(group)]


@dataclass
class _DeferredStep:
    """A step whose rows wait for the cache's final keys: queries per layer (batch, heads, 1, d), its key length."""

    slot: int  # index in AttentionRecord._steps
    queries: list[torch.Tensor]
    kv: int
    attention_mask: torch.Tensor | None  # the layers' mask as the model passed it
    scale: float
    groups: int


class AttentionRecord:
    """Filled by the attention function during the ``capture`` block."""

    def __init__(self, layers: list[int], store_device: str | None, given_span: VisualSpan | None = None):
        self._span: VisualSpan | None = None
        self.layers = layers
        self._layer_slot = {layer: k for k, layer in enumerate(layers)}
        self._store_device = store_device
        self._given_span = given_span  # rows of this span (not expanded) may be deferred
        self._state = None  # the AttentionState, set by ``capture``
        self._steps: list[torch.Tensor | None] = []  # per step: logits (layers, batch, heads, kv); None: deferred
        self._deferred: list[_DeferredStep] = []
        self._keys: list[torch.Tensor] = []  # the latest keys of each requested layer (the deferred steps' cache)
        self._epoch: int | None = None
        self._pending: list[QueryRow] = []  # the current step's rows, until its last requested layer
        self._last_step: int | None = None
        self._visual: torch.Tensor | None = None
        self._shares: torch.Tensor | None = None

    # Observer protocol -------------------------------------------------------------------------------------------
    def wants_layer(self, layer: int) -> bool:
        return layer in self._layer_slot

    def observe(self, step: int, layer: int, row: QueryRow, span: VisualSpan,
                attention_mask: torch.Tensor | None = None) -> None:
        if step != self._last_step:
            if self._pending:
                raise RuntimeError("a step was recorded for only some layers (did the forward pass fail?)")
            self._last_step = step
            self._visual = self._shares = None
        self._span = span
        self._pending.append(row)
        if len(self._pending) < len(self.layers):
            return
        rows, self._pending = self._pending, []
        epoch = self._state.cache_epoch if self._state is not None else None
        if self._deferred and epoch != self._epoch:
            self.flush()  # a fresh cache: the deferred steps' keys are the old cache's, held in self._keys
        self._epoch = epoch
        first = rows[0]
        if (span is self._given_span and epoch is not None and all(r.bias is None and r.logits is None for r in rows)
                and all(r.key.shape == first.key.shape for r in rows)):
            self._keys = [r.key for r in rows]
            self._deferred.append(_DeferredStep(len(self._steps), [r.query for r in rows], first.key.shape[2],
                                                attention_mask, first.scale, first.groups))
            self._steps.append(None)
            return
        batch, heads = first.query.shape[:2]
        mask = last_row_mask(attention_mask, batch, first.key.shape[2], first.query.device).expand(batch, heads, -1)
        logits = row_logits([r._replace(mask=mask) for r in rows])
        self._steps.append(logits.to(self._store_device) if self._store_device is not None else logits)

    def flush(self) -> None:
        """Compute the deferred steps' rows now: per layer one matmul of all their queries against the final keys.
        Reading ``visual`` or ``shares`` does it too; the benchmark calls it so that its timing holds all the work."""
        if not self._deferred:
            return
        steps, keys = self._deferred, self._keys
        self._deferred, self._keys = [], []
        batch, heads, _, dim = steps[0].queries[0].shape
        kv_final = keys[0].shape[2]
        masks = []
        for step in steps:  # additive (batch, 1, kv_final): the step's own mask, and nothing beyond its keys
            row = last_row_mask(step.attention_mask, batch, step.kv, keys[0].device)
            masks.append(torch.nn.functional.pad(row, (0, kv_final - step.kv), value=torch.finfo(torch.float32).min))
        mask = torch.stack(masks, 1)  # (batch, steps, 1, kv_final)
        per_layer = []
        for k, key in enumerate(keys):
            query = torch.cat([step.queries[k] for step in steps], dim=2).float()  # (batch, heads, steps, d)
            key = key.float()
            if steps[0].groups > 1:
                key = key.repeat_interleave(steps[0].groups, dim=1)
            logits = torch.matmul(query, key.transpose(2, 3)) * steps[0].scale  # (batch, heads, steps, kv_final)
            per_layer.append(logits.transpose(1, 2) + mask)  # (batch, steps, heads, kv_final)
        stacked = torch.stack(per_layer)  # (layers, batch, steps, heads, kv_final)
        for j, step in enumerate(steps):
            logits = stacked[:, :, j, :, :step.kv]
            self._steps[step.slot] = logits.to(self._store_device) if self._store_device is not None else logits

    # Results -----------------------------------------------------------------------------------------------------
    @property
    def span(self) -> VisualSpan:
        """The visual span of the recorded inputs (as the model ran them)."""
        if self._span is None:
            raise RuntimeError("nothing was recorded: run the model (forward or generate) inside the capture block")
        return self._span

    @property
    def num_steps(self) -> int:
        return len(self._steps)

    def _materialise(self) -> None:
        if not self._steps:
            raise RuntimeError("nothing was recorded: run the model (forward or generate) inside the capture block")
        if self._pending:
            raise RuntimeError("a step was recorded for only some layers (did the forward pass fail?)")
        self.flush()
        visual, shares = [], []
        for buffer in self._steps:
            logits = buffer.transpose(0, 1)  # (batch, layers, heads, kv)
            batch, layers, heads, kv = logits.shape
            probs = torch.softmax(logits, dim=-1).reshape(batch, layers * heads, kv)
            span = self.span.to(probs.device) if self.span.positions.device != probs.device else self.span
            visual.append(span.take(probs).reshape(batch, layers, heads, -1))
            shares.append(span.group_shares(probs).reshape(batch, layers, heads, -1))
        self._visual, self._shares = torch.stack(visual), torch.stack(shares)

    @property
    def visual(self) -> torch.Tensor:
        """(steps, batch, layers, heads, V): attention of the current query on each visual token.

        Under beam search or ``num_return_sequences=k`` the batch axis holds the expanded rows (row ``b*k + j``).
        """
        if self._visual is None:
            self._materialise()
        return self._visual

    @property
    def shares(self) -> torch.Tensor:
        """(steps, batch, layers, heads, 4): attention mass on system / visual / prompt / generated tokens."""
        if self._shares is None:
            self._materialise()
        return self._shares

    def row(self, index: int = 0) -> RowRecord:
        return RowRecord(self.visual[:, index], self.shares[:, index], self.layers, self.span.grid)


def _layer_list(layers, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    result = sorted({int(layer) for layer in layers})
    bad = [layer for layer in result if not 0 <= layer < num_layers]
    if bad:
        raise ValueError(f"layers {bad} are outside the decoder's 0..{num_layers - 1}")
    if not result:
        raise ValueError("layers is empty; pass None for all layers")
    return result


@contextmanager
def capture(model, inputs=None, *, layers=None, store_device: str | None = None):
    """Record current-query attention over the visual tokens while the block runs.

    ``model`` is a :class:`~clva_lite.models.loading.LoadedModel` or a Hugging Face model; ``inputs`` (optional) the
    processor output the block will pass to it, checked up front for image tokens (otherwise the span is found
    at the block's first prefill). ``layers`` limits recording to some decoder layers; ``store_device="cpu"``
    moves each step's record off the GPU. The model is restored in ``finally``.
    """
    hf_model = unwrap(model)
    num_layers = int(getattr(hf_model.config, "text_config", hf_model.config).num_hidden_layers)
    span = find_visual_span(hf_model, inputs).to(inputs["input_ids"].device) if inputs is not None else None
    record = AttentionRecord(_layer_list(layers, num_layers), store_device, given_span=span)
    with attached(hf_model, span, observer=record) as state:
        record._state = state
        try:
            yield record
        finally:
            if store_device is not None:
                record.flush()  # the keys held for deferred steps may sit on the GPU: compute and move now
