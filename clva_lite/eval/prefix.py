"""Shared image prefix: questions about one image reuse one KV cache of the image and the template before them.

A prompt is ``[prefix | text]``: the prefix runs through the last image token (system text, image tokens) and
is the same for every question about that image; the text is the rest of the template and the question. No method
changes the prefix's keys and values (CLVA, PAI and capture act on the current query, the last position, only), so
the prefix is computed once per image with the stock model (:class:`SharedPrefixes` keeps it, also across the runs
of an alpha/beta grid), copied over the rows that ask about that image, and only the text tokens are prefilled.

Rows are batched by (prefix length, text length), so no row is padded and every position is what the full prompt
gives it (a left-padded full prompt shifts all its positions alike, which rotary attention does not see). VCD's
noised image has its own prefix. What cannot be exact falls back to the full prompt, and says so once:

* families whose prompt is not causal over the prefix or whose positions are not a running count (PaliGemma's
  bidirectional prefix, Gemma 3's image token types, Qwen's M-RoPE) - :func:`shared_prefix_unsupported`;
* generation settings other than greedy or sampling with one sequence per prompt (beam search).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicLayer

from ..attention.capture import unwrap
from ..attention.function import begin_prompt, paused
from ..attention.pai_vcd import _cache_argument, _returned_cache, diffusion_noise
from ..attention.spans import VisualSpan, find_visual_span

# Families whose prefix KV cache a continuation can reuse exactly (tested on each one's tiny stand-in).
SHARED_PREFIX_FAMILIES = ("llava", "llava_next", "llava_onevision", "idefics3", "smolvlm")
_WHY_NOT = {
    "paligemma": "its prompt attends bidirectionally over image and question (a prefix-LM), so the image's keys "
                 "depend on the question",
    "gemma3": "its image tokens attend bidirectionally through token_type_ids, which a text-only continuation does "
              "not carry",
    "qwen2_vl": "its M-RoPE positions (time, height, width) are not a running count",
    "qwen2_5_vl": "its M-RoPE positions (time, height, width) are not a running count",
    "qwen3_vl": "its M-RoPE positions (time, height, width) are not a running count",
}
_SAID: set[str] = set()


def shared_prefix_unsupported(loaded) -> str | None:
    """Why the shared image prefix cannot serve ``loaded`` exactly, or ``None`` when it can."""
    model_type = getattr(unwrap(loaded).config, "model_type", None)
    if model_type in SHARED_PREFIX_FAMILIES:
        return None
    return _WHY_NOT.get(model_type, f"it has not been checked for {model_type!r} models")


def say_fallback_once(reason: str) -> None:
    """One warning per reason and process: the evaluator runs full prompts instead of the shared prefix."""
    if reason not in _SAID:
        _SAID.add(reason)
        warnings.warn(f"shared image prefix off, full prompts instead: {reason}", stacklevel=3)


def _nbytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


class PrefixMismatch(ValueError):
    """Prompts about the same image do not share their prefix; the caller falls back to full prompts."""


@dataclass(frozen=True)
class EncodedRow:
    """One question's prompt. ``ids``: (P + T,) token ids without padding; ``prefix_length``: P, through the last
    image token; ``image_key``: which image (rows with the same key share the prefix)."""

    ids: torch.Tensor
    prefix_length: int
    num_visual: int
    image_key: str

    @property
    def group(self) -> tuple[int, int, int]:
        """Rows of one group batch without padding: (prefix length, visual tokens, text length)."""
        return self.prefix_length, self.num_visual, len(self.ids) - self.prefix_length


class SharedPrefixes:
    """Encoded prompts by item id and prefix KV caches by image (and variant, e.g. VCD's noised image).

    Keep one for as long as the same items are asked again (an alpha/beta grid): nothing in it depends on the
    method. ``max_bytes`` bounds the caches kept (least recently used are dropped and recomputed when needed).
    """

    def __init__(self, loaded, *, max_bytes: int = 2 << 30):
        self.loaded = loaded
        self.max_bytes = max_bytes
        self.rows: dict[str, EncodedRow] = {}
        self._inputs: dict[str, dict] = {}  # image key -> the processor's image tensors for one prompt (prefixes)
        self._caches: OrderedDict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._bytes = 0
        self._pool: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prefills = 0  # prefix forward passes run (a test and the benchmark read it)

    # Encoding ------------------------------------------------------------------------------------------------------
    def encode(self, items: Sequence, images: dict[str, object]) -> None:
        """Encode ``items`` not yet seen; ``images``: image key -> PIL image (see :func:`image_key`)."""
        todo: dict[str, list] = {}
        for item in items:
            if item.item_id not in self.rows:
                todo.setdefault(image_key(item), []).append(item)
        token = self.loaded.image_token_id
        for key, group in todo.items():
            batch = self.loaded.inputs([images[key]] * len(group), [item.question for item in group])
            ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu().bool()
            for k, item in enumerate(group):
                row = ids[k][mask[k]]
                visual = (row == token).nonzero().flatten()
                if len(visual) == 0:
                    raise ValueError(f"item {item.item_id}: the prompt holds no image token; check the processor")
                prefix = int(visual[-1]) + 1
                if prefix >= len(row):
                    raise ValueError(f"item {item.item_id}: the prompt ends with the image; it needs a question")
                if key not in self._inputs:
                    self._inputs[key] = {name: value[k:k + 1] for name, value in batch.items()
                                         if name not in ("input_ids", "attention_mask") and torch.is_tensor(value)}
                    self._inputs[key]["prefix_ids"] = row[:prefix]
                if not torch.equal(self._inputs[key]["prefix_ids"], row[:prefix]):
                    raise PrefixMismatch(f"the prompts about one image differ before its last image token (item "
                                         f"{item.item_id}): the template puts text before the image")
                self.rows[item.item_id] = EncodedRow(row, prefix, len(visual), key)

    # Prefix caches -------------------------------------------------------------------------------------------------
    def prefixes(self, keys: Sequence[str], variant: tuple = ()) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """For each image key, the stock model's per-layer (keys, values), each (1, kv_heads, P, d), of its
        prefix; the missing ones are computed in one pass (a batch's prefixes have one length).
        ``variant``: ``("vcd", noise_step, seed)`` for VCD's noised image."""
        wanted = {(key, variant) for key in keys}
        alike: dict[tuple, list[str]] = {}  # prefixes that batch without padding: same length and image shapes
        for key in dict.fromkeys(keys):
            if (key, variant) in self._caches:
                self._caches.move_to_end((key, variant))
            else:
                shapes = tuple((name, tuple(value.shape)) for name, value in self._inputs[key].items())
                alike.setdefault(shapes, []).append(key)
        for group in alike.values():
            self._compute(group, variant)
        out = [self._caches[(key, variant)] for key in keys]
        for old in [k for k in self._caches if k not in wanted]:  # least recently used first, never this batch's
            if self._bytes <= self.max_bytes:
                break
            self._bytes -= _nbytes(self._caches.pop(old))
        return out

    def _compute(self, keys: list[str], variant: tuple) -> None:
        model = unwrap(self.loaded)
        stored = [self._inputs[key] for key in keys]
        device = self.loaded.device
        ids = torch.stack([s["prefix_ids"] for s in stored]).to(device)
        extra = {name: torch.cat([s[name] for s in stored]).to(device) for name in stored[0] if name != "prefix_ids"}
        if variant and variant[0] == "vcd":
            extra["pixel_values"] = diffusion_noise(extra["pixel_values"], variant[1], variant[2])
        with torch.no_grad(), paused(model):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **extra)
        self.prefills += 1
        cache = _returned_cache(out)
        for row, key in enumerate(keys):
            layers = [(layer.keys[row:row + 1].clone(), layer.values[row:row + 1].clone()) for layer in cache.layers]
            self._caches[(key, variant)] = layers
            self._bytes += _nbytes(layers)

    def batch_cache(self, keys: Sequence[str], variant: tuple = (), room: int = 0):
        """A fresh ``DynamicCache`` whose row r holds the prefix of image ``keys[r]``, copied into buffers with
        ``room`` free slots, so that the next ``room`` tokens are written in place instead of re-copying the cache
        at every step (the stored prefixes are never written to)."""
        from transformers import DynamicCache

        unique = list(dict.fromkeys(keys))
        per_image = self.prefixes(unique, variant)
        where = torch.tensor([unique.index(key) for key in keys], device=self.loaded.device)
        cache = DynamicCache(config=unwrap(self.loaded).config)
        for layer, slot in enumerate(cache.layers):
            k, v = (torch.cat([p[layer][i] for p in per_image]) if len(per_image) > 1 else per_image[0][layer][i]
                    for i in (0, 1))
            if type(slot) is DynamicLayer:
                cache.layers[layer] = _PrefilledLayer(k, v, where, room, self._buffers(variant, layer, k, v,
                                                                                      len(keys), room))
            else:
                slot.update(k.index_select(0, where), v.index_select(0, where))
        return cache

    def _buffers(self, variant: tuple, layer: int, keys: torch.Tensor, values: torch.Tensor, batch: int,
                 room: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty (batch, kv_heads, P + room, d) key and value buffers for one layer, reused from batch to batch
        (fresh allocations of this size cost more than the copy into them); one set per variant, since VCD's
        contrast cache lives beside the main one, and the last few shapes kept."""
        shape = (batch, keys.shape[1], keys.shape[2] + room)
        slot = (variant, layer, shape, keys.dtype, keys.device)
        if slot not in self._pool:
            self._pool[slot] = (keys.new_empty(*shape, keys.shape[3]), values.new_empty(*shape, values.shape[3]))
            shapes = list(dict.fromkeys(key[:3:2] for key in self._pool))
            if len(shapes) > 4:
                self._pool = {key: value for key, value in self._pool.items() if key[:3:2] in shapes[-4:]}
        return self._pool[slot]

    # Batches -------------------------------------------------------------------------------------------------------
    def batches(self, items: Sequence, batch_size: int) -> list[list]:
        """``items`` in batches of at most ``batch_size`` rows of one group (no padding), an image's rows together."""
        groups: dict[tuple, list] = {}
        for item in items:
            groups.setdefault(self.rows[item.item_id].group, []).append(item)
        out = []
        for group in groups.values():
            group.sort(key=lambda item: self.rows[item.item_id].image_key)  # stable: file order within an image
            out += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
        return out

    def batch(self, items: Sequence) -> SharedPrefixBatch:
        """The full prompts of one batch (from :meth:`batches`), with what the prefix path needs."""
        rows = [self.rows[item.item_id] for item in items]
        ids = torch.stack([row.ids for row in rows]).to(self.loaded.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        span = find_visual_span(unwrap(self.loaded), inputs)
        return SharedPrefixBatch(self, inputs, [row.image_key for row in rows], rows[0].prefix_length, span)


class _PrefilledLayer(DynamicLayer):
    """A KV cache layer over preallocated (batch, kv_heads, P + room, d) buffers; ``keys`` / ``values`` are views of
    the filled part. Behaves as transformers' ``DynamicLayer`` (it falls back to concatenation when full)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, room: int,
                 buffers: tuple[torch.Tensor, torch.Tensor]):
        """keys, values: (images, kv_heads, P, d); rows: (batch,) which image each row holds; buffers: empty
        (batch, kv_heads, P + room, d) tensors to fill."""
        super().__init__()
        length = keys.shape[2]
        self._keys, self._values = buffers
        start = 0
        for image, count in zip(*torch.unique_consecutive(rows, return_counts=True)):  # one copy per run of rows
            for buffer, source in ((self._keys, keys), (self._values, values)):
                buffer[start:start + int(count), :, :length] = source[int(image)]
            start += int(count)
        self.length = length
        self.is_initialized = True
        self.device, self.dtype = keys.device, keys.dtype
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if self.length + new <= self._keys.shape[2]:
            self._keys[:, :, self.length:self.length + new] = key_states
            self._values[:, :, self.length:self.length + new] = value_states
        else:
            self._keys = torch.cat([self._keys[:, :, :self.length], key_states], dim=-2)
            self._values = torch.cat([self._values[:, :, :self.length], value_states], dim=-2)
        self.length += new
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def reset(self) -> None:
        self.length = 0
        self.keys, self.values = self._keys[:, :, :0], self._values[:, :, :0]

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length - abs(max_length)
        self.length = min(self.length, max_length)
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]


@dataclass
class SharedPrefixBatch:
    """A batch of full prompts (no padding) whose first ``prefix_length`` tokens are cached per image."""

    store: SharedPrefixes
    inputs: dict  # input_ids / attention_mask: (batch, P + T)
    image_keys: list[str]
    prefix_length: int
    span: VisualSpan

    room: int = 0  # cache slots for the text and the new tokens

    def cache(self, variant: tuple = ()):
        return self.store.batch_cache(self.image_keys, variant, room=self.room)

    def generate(self, model, processors, **kwargs) -> torch.Tensor:
        """``model.generate`` continuing the cached prefix; returns (batch, P + T + new) like the full prompt."""
        begin_prompt(model, self.span)
        self.room = self.inputs["input_ids"].shape[1] - self.prefix_length + int(kwargs.get("max_new_tokens") or 0)
        kwargs[_cache_argument(model)] = self.cache()
        if processors:
            kwargs["logits_processor"] = processors
        return model.generate(**self.inputs, **kwargs)

    def continue_prompt(self, model, cache, **kwargs):
        """One forward over the text tokens after ``cache`` (a contrastive pass's first step); returns the output."""
        ids = self.inputs["input_ids"]
        positions = torch.arange(self.prefix_length, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        return model(input_ids=ids[:, self.prefix_length:], attention_mask=self.inputs["attention_mask"],
                     position_ids=positions, use_cache=True, **{_cache_argument(model): cache}, **kwargs)


def image_key(item) -> str:
    """Which image an item asks about: its ``image_key`` when given, its file, or its toy scene."""
    meta = item.meta
    if "image_key" in meta:
        return meta["image_key"]
    if "image_path" in meta:
        return f"file:{meta['image_path']}"
    return f"toy:{meta['split']}:{meta['scene_index']}"


def exact_settings(kwargs: dict) -> str | None:
    """Why these ``generate`` settings need the full prompt, or ``None`` when the shared prefix is exact."""
    if int(kwargs.get("num_beams", 1) or 1) > 1:
        return "beam search reorders the cache rows"
    if int(kwargs.get("num_return_sequences", 1) or 1) > 1:
        return "several sequences per prompt"
    return None


def shared_prefixes(loaded, shared_prefix: bool | SharedPrefixes, **generate_kwargs) -> SharedPrefixes | None:
    """The store to use (``None``: full prompts). ``True`` makes one when the model and settings allow it exactly,
    and says once why not otherwise; a :class:`SharedPrefixes` is used as it is (keep one across runs over the
    same items, e.g. a grid)."""
    if shared_prefix is False or shared_prefix is None:
        return None
    reason = shared_prefix_unsupported(loaded) or exact_settings(generate_kwargs)
    if reason is not None:
        say_fallback_once(reason)
        return None
    return shared_prefix if isinstance(shared_prefix, SharedPrefixes) else SharedPrefixes(loaded)


@dataclass(frozen=True)
class _Prompt:
    item_id: str
    question: str
    meta: dict


def forward_prompts(loaded, images: Sequence, questions: Sequence[str], *, batch_size: int = 32,
                    desc: str = "prompts", record: bool = False, shared_prefix: bool | SharedPrefixes = True,
                    **kwargs):
    """One forward pass over every prompt, in batches: yields ``(rows, output, attention_record)`` where ``rows``
    indexes ``questions`` and the output's last position is each prompt's last token (``attention_record``: a
    :func:`~clva_lite.attention.capture.capture` record of the pass with ``record``, else ``None``).

    Questions about the same picture (same pixels) continue one cached image prefix, as the evaluator does: the
    outputs at the last position and the captured attention are the full prompt's (fp32 reduction noise aside).
    Families the prefix cannot serve exactly run full prompts (said once); ``shared_prefix=False`` always does.
    ``kwargs`` go to the model (e.g. ``output_hidden_states=True``)."""
    import hashlib
    from contextlib import nullcontext

    from ..attention.capture import capture
    from ..progress import tqdm

    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions; pass one image per question")
    model = unwrap(loaded)
    store = shared_prefixes(loaded, shared_prefix) if len(questions) else None
    batches = None
    if store is not None:
        keys, pictures, prompts = {}, {}, []
        for k, (image, question) in enumerate(zip(images, questions)):
            if id(image) not in keys:
                digest = hashlib.sha1(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
                keys[id(image)] = f"pixels:{digest}"
                pictures.setdefault(keys[id(image)], image)
            prompts.append(_Prompt(str(k), question, {"image_key": keys[id(image)]}))
        try:
            store.encode(prompts, pictures)
            batches = store.batches(prompts, batch_size)
        except PrefixMismatch as error:
            say_fallback_once(str(error))
            store = None
    if batches is None:
        batches = [list(range(i, min(i + batch_size, len(questions)))) for i in range(0, len(questions), batch_size)]
    for batch in tqdm(batches, desc=desc):
        if store is not None:
            shared = store.batch(batch)
            shared.room = shared.inputs["input_ids"].shape[1] - shared.prefix_length
            with torch.no_grad(), (capture(loaded, shared.inputs) if record else nullcontext()) as rec:
                begin_prompt(model, shared.span)
                out = shared.continue_prompt(model, shared.cache(), **kwargs)
            yield [int(prompt.item_id) for prompt in batch], out, rec
        else:
            inputs = loaded.inputs([images[k] for k in batch], [questions[k] for k in batch])
            with torch.no_grad(), (capture(loaded, inputs) if record else nullcontext()) as rec:
                out = model(**inputs, **kwargs)
            yield batch, out, rec
