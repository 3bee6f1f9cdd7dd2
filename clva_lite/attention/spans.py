"""Where the visual tokens are: positions per batch row, token groups, and the image grid they tile.

KV-cache slots keep absolute positions, so the visual positions found in the prompt stay valid at every decoding
step. Beam search and ``num_return_sequences`` repeat each row (``repeat_interleave``); :meth:`VisualSpan.expanded_to`
follows that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

GROUPS = ("system", "visual", "prompt", "generated")


@dataclass
class VisualSpan:
    """Visual-token positions of a (left-padded) batch.

    positions: (batch, V) absolute key positions of the visual tokens, ascending.
    system: (batch, prompt_length) bool, non-padding prompt tokens before the first visual token.
    prompt: (batch, prompt_length) bool, non-padding text tokens after the first visual token (with several images
        or tiles, the tokens between them count here).
    grid: (rows, cols) of the image drawn in heat maps, or ``None`` when no grid is known (``grid_note`` says why).
    grid_tokens: (start, stop) on the visual axis of the tokens that tile ``grid`` (LLaVA-NeXT's base view,
        SmolVLM's global image), or ``None`` when all V tokens do.
    """

    positions: torch.Tensor
    system: torch.Tensor
    prompt: torch.Tensor
    grid: tuple[int, int] | None
    grid_note: str = ""
    grid_tokens: tuple[int, int] | None = None
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
                self.prompt.repeat_interleave(k, 0), self.grid, self.grid_note, self.grid_tokens,
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
                          self.grid_note, self.grid_tokens)

    def on_grid(self, visual: torch.Tensor) -> torch.Tensor:
        """Visual attention (a tensor or array) laid out on the image grid: (..., V) -> (..., rows, cols). Raises when
        no grid is known."""
        if self.grid is None:
            raise ValueError(f"these visual tokens cannot be drawn over the image: {self.grid_note}")
        if visual.shape[-1] != self.num_visual:
            raise ValueError(f"expected {self.num_visual} visual tokens on the last axis, got {visual.shape[-1]}")
        if self.grid_tokens is not None:
            visual = visual[..., self.grid_tokens[0]:self.grid_tokens[1]]
        return visual.reshape(*visual.shape[:-1], *self.grid)

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


def image_token_id(config) -> int:
    """The config's image placeholder id (``image_token_id``, or ``image_token_index`` in older configs)."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"the {getattr(config, 'model_type', '?')!r} config names no image token "
                     "(image_token_id / image_token_index), so its visual tokens cannot be found")


def _patches_per_side(vision_config) -> int:
    return int(vision_config.image_size) // int(vision_config.patch_size)


def _grid_llava(config, inputs, n):
    """LLaVA-1.5: one square grid per image (a kept CLS token makes it one longer); heat maps show the first."""
    side = _patches_per_side(config.vision_config)
    per_image = side * side + int(getattr(config, "vision_feature_select_strategy", "default") == "full")
    if n == side * side:
        return (side, side), None, ""
    if n % per_image or per_image != side * side:
        return None, None, f"{n} visual tokens are not whole {side}x{side} grids"
    return (side, side), (0, side * side), f"heat maps show the first of {n // per_image} images"


def _grid_base_view(config, inputs, n):
    """LLaVA-NeXT / OneVision: the base (resized whole) image comes first, then the tiles with newline tokens."""
    side = _patches_per_side(config.vision_config)
    if n < side * side:
        return None, None, f"{n} visual tokens are fewer than the {side}x{side} base view"
    return (side, side), (0, side * side), f"heat maps show the {side}x{side} base view; tiles and newlines are skipped"


def _grid_merged_patches(config, inputs, n):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: the first image's ``image_grid_thw`` (h, w) over the spatial merge size."""
    thw = inputs.get("image_grid_thw")
    merge = getattr(config.vision_config, "spatial_merge_size", 2)
    batch = inputs["input_ids"].shape[0]
    if thw is None or thw.shape[0] % batch:
        return None, None, "the Qwen visual tokens could not be mapped to an image grid (no image_grid_thw)"
    per_row = thw.shape[0] // batch
    t, h, w = (int(v) for v in thw[0])
    rows_same = bool((thw.view(batch, per_row, 3) == thw.view(batch, per_row, 3)[:1]).all())
    if t != 1 or not rows_same or (h // merge) * (w // merge) > n:
        return None, None, "the Qwen visual tokens could not be mapped to one image grid (video, or images differ)"
    count = (h // merge) * (w // merge)
    note = "" if count == n else f"heat maps show the first of {per_row} images"
    return (h // merge, w // merge), (None if count == n else (0, count)), note


def _grid_global_image(config, inputs, n):
    """Idefics3 / SmolVLM: with image splitting the tiles come first and the downscaled whole image last."""
    per_image = _patches_per_side(config.vision_config) ** 2 // int(config.scale_factor) ** 2
    grid = _square_grid(per_image)
    if grid is None or n % per_image:
        return None, None, f"{n} visual tokens are not whole images of {per_image} tokens"
    if n == per_image:
        return grid, None, ""
    return grid, (n - per_image, n), "heat maps show the global (whole-image) view; tiles are skipped"


def _grid_fixed(field: str):
    def rule(config, inputs, n):
        count = int(getattr(config, field))
        grid = _square_grid(count)
        if grid is None or n % count:
            return None, None, f"{n} visual tokens are not whole images of {count} tokens"
        return grid, (None if n == count else (0, count)), "" if n == count else "heat maps show the first image"
    return rule


def _grid_paligemma(config, inputs, n):
    grid = _square_grid(_patches_per_side(config.vision_config) ** 2)
    return (grid, None, "") if grid and grid[0] * grid[1] == n else (None, None, f"{n} visual tokens, no grid")


# Per-family knowledge: how the visual tokens tile the image. Everything else is generic (the image token's
# positions in ``input_ids``).
GRID_RULES: dict[str, Callable] = {
    "llava": _grid_llava,
    "llava_next": _grid_base_view,
    "llava_onevision": _grid_base_view,
    "qwen2_vl": _grid_merged_patches,
    "qwen2_5_vl": _grid_merged_patches,
    "qwen3_vl": _grid_merged_patches,
    "gemma3": _grid_fixed("mm_tokens_per_image"),
    "paligemma": _grid_paligemma,
    "idefics3": _grid_global_image,
    "smolvlm": _grid_global_image,
}
SUPPORTED_MODEL_TYPES = tuple(GRID_RULES)


def find_visual_span(model, inputs) -> VisualSpan:
    """Locate the visual tokens of processed ``inputs``: the positions of the config's image token in ``input_ids``.

    Any number of images, tiles and runs per prompt (Idefics3 interleaves tiles with row/column tokens); every row
    must hold the same number of visual tokens. The grid for heat maps is per family (``GRID_RULES``), e.g. 24x24
    for LLaVA-1.5's 576 tokens, LLaVA-NeXT's base view, Qwen's merged patch grid, SmolVLM's global image.
    """
    hf_model = getattr(model, "model", model) if hasattr(model, "processor") else model
    config = hf_model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in GRID_RULES:
        raise ValueError(f"visual tokens of {model_type!r} models are not supported; supported: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    input_ids = inputs["input_ids"]
    attention_mask = inputs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    token = image_token_id(config)
    is_visual = (input_ids == token) & attention_mask.bool()
    counts = is_visual.sum(1)
    if int(counts.min()) == 0:
        rows = [i for i, c in enumerate(counts.tolist()) if c == 0]
        raise ValueError(
            f"prompt row(s) {rows} contain no image tokens (id {token}); build the prompt with an image "
            "(clva_lite.build_inputs / the processor's chat template with an image entry)"
        )
    if int(counts.max()) != int(counts.min()):
        raise ValueError(
            f"rows have different numbers of visual tokens ({counts.tolist()}); batch images of the same size and "
            "the same number of images per prompt, or run the prompts one at a time"
        )
    positions = torch.stack([row.nonzero().squeeze(1) for row in is_visual])
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    valid = attention_mask.bool()
    system = valid & ~is_visual & (index < positions[:, :1])
    prompt = valid & ~is_visual & (index > positions[:, :1])
    grid, tokens, note = GRID_RULES[model_type](config, inputs, positions.shape[1])
    return VisualSpan(positions, system, prompt, grid, note, grid_tokens=tokens)
