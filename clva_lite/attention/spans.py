"""Where the visual tokens are: positions per batch row, token groups, and the image grid they tile.

KV-cache slots keep absolute positions, so the visual positions found in the prompt stay valid at every decoding
step. Beam search and ``num_return_sequences`` repeat each row (``repeat_interleave``); :meth:`VisualSpan.expanded_to`
follows that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GROUPS = ("system", "visual", "prompt", "generated")


@dataclass
class VisualSpan:
    """Visual-token positions of a (left-padded) batch.

    positions: (batch, V) absolute key positions of the visual tokens, ascending.
    system: (batch, prompt_length) bool, non-padding prompt tokens before the first visual token.
    prompt: (batch, prompt_length) bool, non-padding prompt tokens after the last visual token.
    grid: (rows, cols) of the image the V tokens tile, or ``None`` when they are not one plain grid.
    """

    positions: torch.Tensor
    system: torch.Tensor
    prompt: torch.Tensor
    grid: tuple[int, int] | None
    grid_note: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    @property
    def num_visual(self) -> int:
        return self.positions.shape[1]

    @property
    def prompt_length(self) -> int:
        return self.system.shape[1]

    def same_as(self, other: VisualSpan) -> bool:
        return self is other or (
            self.positions.shape == other.positions.shape
            and bool(torch.equal(self.positions.cpu(), other.positions.cpu()))
        )

    def expanded_to(self, batch: int) -> VisualSpan:
        """The span for a batch in which each row is repeated ``batch // batch_size`` times."""
        if batch == self.batch_size:
            return self
        if batch % self.batch_size:
            raise ValueError(
                f"the model ran a batch of {batch} rows, which is not a multiple of the {self.batch_size} rows the "
                "capture/intervention was set up for; pass the same inputs to the context and to generate"
            )
        if batch not in self._cache:
            k = batch // self.batch_size
            self._cache[batch] = VisualSpan(
                self.positions.repeat_interleave(k, 0), self.system.repeat_interleave(k, 0),
                self.prompt.repeat_interleave(k, 0), self.grid, self.grid_note,
            )
        return self._cache[batch]

    def index_for(self, heads: int) -> torch.Tensor:
        """Gather/scatter index (batch, heads, V) over the key axis."""
        key = ("index", heads)
        if key not in self._cache:
            self._cache[key] = self.positions.unsqueeze(1).expand(-1, heads, -1).contiguous()
        return self._cache[key]

    @property
    def start(self) -> int | None:
        """The first visual position when every row's visual tokens are one run at the same place (then the
        visual keys are a slice, a view, not a gather), else ``None``. Read once per span (a host sync on GPU)."""
        if "start" not in self._cache:
            first = self.positions[:, :1]
            run = first + torch.arange(self.num_visual, device=self.positions.device)
            aligned = bool((self.positions == run).all()) and bool((first == first[:1]).all())
            self._cache["start"] = int(first[0, 0]) if aligned else None
        return self._cache["start"]

    def take(self, row: torch.Tensor) -> torch.Tensor:
        """The visual part of a key axis. row: (batch, heads, kv) -> (batch, heads, V)."""
        start = self.start
        if start is not None:
            return row[..., start:start + self.num_visual]
        return row.gather(2, self.index_for(row.shape[1]))

    def take_keys(self, key: torch.Tensor) -> torch.Tensor:
        """Keys of the visual tokens. key: (batch, kv_heads, kv, d) -> (batch, kv_heads, V, d)."""
        start = self.start
        if start is not None:
            return key[:, :, start:start + self.num_visual]
        index = self.index_for(key.shape[1]).unsqueeze(-1).expand(-1, -1, -1, key.shape[-1])
        return key.gather(2, index)

    def place(self, visual: torch.Tensor, kv: int) -> torch.Tensor:
        """A zero (batch, heads, kv) row holding ``visual`` (batch, heads, V) at the visual positions."""
        out = visual.new_zeros(visual.shape[0], visual.shape[1], kv)
        start = self.start
        if start is not None:
            out[..., start:start + self.num_visual] = visual
            return out
        return out.scatter_(2, self.index_for(visual.shape[1]), visual)

    def to(self, device: torch.device) -> VisualSpan:
        return VisualSpan(self.positions.to(device), self.system.to(device), self.prompt.to(device), self.grid,
                          self.grid_note)

    def group_shares(self, probs: torch.Tensor) -> torch.Tensor:
        """Attention mass per group of one query row.

        probs: (batch, heads, kv) post-softmax row. Returns (batch, heads, 4) in ``GROUPS`` order; the four shares
        sum to 1 (padding keys carry no mass).
        """
        length = self.prompt_length
        prompt_probs = probs[..., :length]
        visual = self.take(probs).sum(-1)
        system = (prompt_probs * self.system.unsqueeze(1)).sum(-1)
        prompt = (prompt_probs * self.prompt.unsqueeze(1)).sum(-1)
        generated = probs[..., length:].sum(-1)
        return torch.stack([system, visual, prompt, generated], dim=-1)


def _square_grid(n: int) -> tuple[int, int] | None:
    side = int(round(n**0.5))
    return (side, side) if side * side == n else None


def find_visual_span(model, inputs) -> VisualSpan:
    """Locate the visual tokens of processed ``inputs`` for a supported model family.

    LLaVA: the expanded ``image_token_id`` run (a square grid, e.g. 24x24 for LLaVA-1.5's 576 tokens).
    Qwen2-VL: the ``<|image_pad|>`` run; its grid is ``image_grid_thw`` (h, w) divided by the merge size.
    """
    hf_model = getattr(model, "model", model) if hasattr(model, "processor") else model
    config = hf_model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in ("llava", "qwen2_vl"):
        raise ValueError(f"visual tokens of {model_type!r} models are not supported; supported: llava, qwen2_vl")
    input_ids = inputs["input_ids"]
    attention_mask = inputs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    image_token_id = int(config.image_token_id)
    is_visual = input_ids == image_token_id
    counts = is_visual.sum(1)
    if int(counts.min()) == 0:
        rows = [i for i, c in enumerate(counts.tolist()) if c == 0]
        raise ValueError(
            f"prompt row(s) {rows} contain no image tokens (id {image_token_id}); build the prompt with an image "
            "(clva_lite.build_inputs / the processor's chat template with an image entry)"
        )
    if int(counts.max()) != int(counts.min()):
        raise ValueError(
            f"rows have different numbers of visual tokens ({counts.tolist()}); batch images of the same size"
        )
    positions = torch.stack([row.nonzero().squeeze(1) for row in is_visual])
    n_visual = positions.shape[1]
    if bool((positions[:, -1] - positions[:, 0] + 1 != n_visual).any()):
        raise ValueError("the visual tokens are not one contiguous run; clva_lite supports one image per prompt")
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    valid = attention_mask.bool()
    system = valid & (index < positions[:, :1])
    prompt = valid & (index > positions[:, -1:])

    grid, note = None, ""
    if model_type == "qwen2_vl":
        thw = inputs.get("image_grid_thw")
        merge = getattr(config.vision_config, "spatial_merge_size", 2)
        if thw is not None and thw.shape[0] == input_ids.shape[0]:
            t, h, w = (int(v) for v in thw[0])
            if t == 1 and (h // merge) * (w // merge) == n_visual and bool((thw == thw[0]).all()):
                grid = (h // merge, w // merge)
        if grid is None:
            note = "the Qwen2-VL visual tokens could not be mapped to one image grid"
    else:
        grid = _square_grid(n_visual)
        if grid is None:
            note = f"{n_visual} visual tokens do not form a square grid (tiled/any-resolution image?)"
    return VisualSpan(positions, system, prompt, grid, note)
