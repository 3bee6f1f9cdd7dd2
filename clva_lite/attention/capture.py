"""Record the current query's attention over the visual tokens, per decoding step, layer and head.

    with clva_lite.capture(model, inputs) as rec:
        model.generate(**inputs, max_new_tokens=8)
    rec.visual        # (steps, batch, layers, heads, V)
    rec.shares        # (steps, batch, layers, heads, 4): system / visual / prompt / generated
    rec.row(0).visual # (steps, layers, heads, V) for the first batch row

Step 0 is the prefill's last prompt token; step k > 0 is the k-th generated token's query. During the pass each
requested layer hands over its current query and keys (views, no copies); after the step's last requested layer
all its rows are computed in one fused batched matmul and kept as logits; the softmax and the visual / group split
run when ``visual`` or ``shares`` is first read, off the model's hot path.
Memory per step is O(layers x heads x keys); only the requested layers are kept.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .function import QueryRow, attached, row_logits
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


class AttentionRecord:
    """Filled by the attention function during the ``capture`` block."""

    def __init__(self, layers: list[int], store_device: str | None):
        self._span: VisualSpan | None = None
        self.layers = layers
        self._layer_slot = {layer: k for k, layer in enumerate(layers)}
        self._store_device = store_device
        self._steps: list[torch.Tensor] = []  # per step: logits (layers, batch, heads, kv)
        self._pending: list[QueryRow] = []  # the current step's rows, until its last requested layer
        self._last_step: int | None = None
        self._visual: torch.Tensor | None = None
        self._shares: torch.Tensor | None = None

    # Observer protocol -------------------------------------------------------------------------------------------
    def wants_layer(self, layer: int) -> bool:
        return layer in self._layer_slot

    def observe(self, step: int, layer: int, row: QueryRow, span: VisualSpan) -> None:
        if step != self._last_step:
            if self._pending:
                raise RuntimeError("a step was recorded for only some layers (did the forward pass fail?)")
            self._last_step = step
            self._visual = self._shares = None
        self._span = span
        self._pending.append(row)
        if len(self._pending) == len(self.layers):
            logits, self._pending = row_logits(self._pending), []
            self._steps.append(logits.to(self._store_device) if self._store_device is not None else logits)

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
    record = AttentionRecord(_layer_list(layers, num_layers), store_device)
    with attached(hf_model, span, observer=record):
        yield record
