"""Decoding methods under one interface: vanilla, CLVA, PAI, VCD.

``method.generate(loaded, inputs, max_new_tokens=...)`` runs ``model.generate`` with the method switched on
(context managers for attention changes, logits processors for contrastive passes), greedy by default.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..attention.capture import unwrap
from ..attention.clva import CLVAConfig, clva
from ..attention.heads import HeadClasses
from ..attention.pai_vcd import PAIConfig, VCDConfig, pai_attention, pai_guidance, vcd_processor

METHOD_KINDS = ("vanilla", "clva", "pai", "vcd")


@dataclass(frozen=True)
class Method:
    """A named decoding method. ``config``: CLVAConfig / PAIConfig / VCDConfig / None."""

    name: str
    kind: str
    config: object = None
    heads: HeadClasses | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"unknown method kind {self.kind!r}; use one of {METHOD_KINDS}")

    def context(self, loaded):
        """The context manager that switches the method's attention change on (if any)."""
        if self.kind == "clva":
            return clva(loaded, self.config, heads=self.heads)
        if self.kind == "pai":
            return pai_attention(loaded, self.config)
        return nullcontext()

    def logits_processors(self, loaded, inputs, shared=None):
        if self.kind == "pai":
            return pai_guidance(loaded, inputs, self.config)
        if self.kind == "vcd":
            return vcd_processor(loaded, inputs, self.config, shared=shared)
        return None

    @torch.no_grad()
    def generate(self, loaded, inputs, *, shared=None, **kwargs) -> torch.Tensor:
        """``model.generate(**inputs, **kwargs)`` with this method on; greedy unless told otherwise.

        ``shared``: a :class:`~clva_lite.eval.prefix.SharedPrefixBatch` (then ``inputs`` is ``shared.inputs``): the
        generation continues the images' cached prefixes instead of prefilling the whole prompt."""
        kwargs.setdefault("do_sample", False)
        processors = self.logits_processors(loaded, inputs, shared)
        with self.context(loaded):
            if shared is not None:
                return shared.generate(unwrap(loaded), processors, **kwargs)
            if processors:
                kwargs["logits_processor"] = processors
            return unwrap(loaded).generate(**inputs, **kwargs)

    def describe(self) -> dict:
        from dataclasses import asdict, is_dataclass

        config = asdict(self.config) if is_dataclass(self.config) else None
        heads = None if self.heads is None else {"source": self.heads.source, "rule": self.heads.rule,
                                                 "criterion": self.heads.criterion}
        return {"name": self.name, "kind": self.kind, "config": config, "heads": heads}


def vanilla() -> Method:
    return Method("vanilla", "vanilla")


def clva_method(config: CLVAConfig | None = None, heads: HeadClasses | None = None, name: str = "CLVA") -> Method:
    return Method(name, "clva", config or CLVAConfig(), heads)


def pai_method(config: PAIConfig | None = None, name: str = "PAI") -> Method:
    return Method(name, "pai", config or PAIConfig())


def vcd_method(config: VCDConfig | None = None, name: str = "VCD") -> Method:
    return Method(name, "vcd", config or VCDConfig())
