"""Real Hugging Face models, or a tiny offline stand-in of the same class, and what a real model costs.

``load_real_or_stand_in("llava-hf/llava-1.5-7b-hf")`` loads the real model when the hub can be reached and the
weights fit on the device; otherwise (no network, ``CI`` set, ``HF_HUB_OFFLINE=1``, not enough memory, a failed
download) it loads a tiny random-weight model of the same Hugging Face class (:mod:`clva_lite.models.tiny`) and says
why. The stand-in exercises the same code path (``from_pretrained``, processor, chat template, attention
interface); its answers are meaningless.

``parameter_count`` and ``memory_estimate`` build the model from its config on PyTorch's ``meta`` device (shapes
only, no memory, no download), so the numbers for e.g. LLaVA-1.5-7B are exact parameter counts and arithmetic
from them, not measurements.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch

from .families import FAMILIES, served_text
from .loading import LoadedModel, default_device, load_model
from .tiny import TINY_KINDS, save_tiny_model

DEFAULT_ENDPOINT = "https://huggingface.co"
_NOTES = {
    "llava-hf/llava-1.5-7b-hf": "the paper's model; GPU (fp16, or 4-bit on a small GPU)",
    "llava-hf/llava-interleave-qwen-0.5b-hf": "small: runs on a CPU Colab",
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": "small: runs on a CPU Colab",
    "HuggingFaceTB/SmolVLM-256M-Instruct": "small: runs on a CPU Colab",
    "Qwen/Qwen2-VL-2B-Instruct": "dynamic resolution, M-RoPE; GPU recommended",
}
SUPPORTED_MODELS: tuple[dict[str, str], ...] = tuple(
    {"model_id": hub_id, "family": f.model_type, "class": f.model_class, "stand_in": f.tiny_kind,
     "note": _NOTES.get(hub_id, "GPU")}
    for f in FAMILIES.values() for hub_id in f.hub_ids)
# Hub ids recognised by name (case-insensitive, first match wins), with the tiny stand-in of the same class.
_SUPPORTED_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(^|/)llava-interleave-qwen-", "llava-qwen2"),
    (r"(^|/)(llava-1\.5-|bakllava)", "llava-llama"),
    (r"(^|/)(llava-v1\.6-|llava-next-\d)", "llava-next"),
    (r"(^|/)llava-onevision-", "llava-onevision"),
    (r"(^|/)qwen2-vl-", "qwen2-vl"),
    (r"(^|/)qwen2\.5-vl-", "qwen2.5-vl"),
    (r"(^|/)qwen3-vl-\d", "qwen3-vl"),
    (r"(^|/)gemma-3-\d", "gemma3"),
    (r"(^|/)paligemma", "paligemma"),
    (r"(^|/)smolvlm2-", "smolvlm"),
    (r"(^|/)(smolvlm-|idefics3-)", "idefics3"),
)
# Well-known vision-language models of other classes: a clear error instead of a stand-in of the wrong class.
_UNSUPPORTED_PATTERNS = (r"llava-next-video", r"llava-video", r"qwen3-vl-.*moe|qwen3-vl-30b|qwen3-vl-235b",
                         r"qwen2\.5-omni", r"gemma-3n",
                         r"idefics2", r"(^|/)idefics-", r"blip", r"instructblip", r"internvl", r"minicpm",
                         r"phi-3.*vision", r"pixtral", r"mistral-small-3")


def _supported_text() -> str:
    return f"clva_lite supports: {served_text()}. Example ids: {', '.join(f.hub_ids[0] for f in FAMILIES.values())}"


def stand_in_kind(model_id: str) -> str | None:
    """The :mod:`clva_lite.models.tiny` kind of the same Hugging Face class as ``model_id``.

    ``None`` when the id is not recognised by name (it may still be supported: ``load_model`` reads its config);
    ``ValueError`` for well-known models of classes clva_lite does not support.
    """
    name = str(model_id).lower()
    for known in SUPPORTED_MODELS:
        if name == known["model_id"].lower():
            return known["stand_in"]
    for pattern in _UNSUPPORTED_PATTERNS:
        if re.search(pattern, name):
            raise ValueError(f"{model_id!r} is not supported (its architecture is not one clva_lite handles). "
                             + _supported_text())
    for pattern, kind in _SUPPORTED_PATTERNS:
        if re.search(pattern, name):
            return kind
    return None


def hub_reachable(timeout: float = 2.0, endpoint: str | None = None) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (any HTTP answer counts).

    The probe runs in a daemon thread joined with ``timeout``, so a slow DNS lookup cannot block longer.
    """
    url = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/") + "/api/models"
    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # the server answered, with an error status: it is reachable
        except Exception:  # noqa: BLE001 - URLError, socket timeout, DNS failure, proxy refusal ...
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def offline_reason(timeout: float = 2.0) -> str | None:
    """Why the real model will not be downloaded here, or ``None`` when the hub can be used."""
    if _flag("CI"):
        return "running under CI (the CI environment variable is set), where nothing is downloaded"
    if _flag("HF_HUB_OFFLINE"):
        return "HF_HUB_OFFLINE is set, so the Hugging Face hub is not contacted"
    if not hub_reachable(timeout):
        return f"the Hugging Face hub could not be reached within {timeout:g} s (no network?)"
    return None


# --- sizes from a config, on the meta device ----------------------------------------------------------------------


def as_config(config: Any):
    """A ``PretrainedConfig`` from a config object or a dict (a dict without ``model_type`` is a LLaVA config,
    like :data:`clva_lite.eval.overhead.LLAVA_15_7B`)."""
    from transformers import AutoConfig, LlavaConfig, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    if isinstance(config, dict):
        values = dict(config)
        model_type = values.pop("model_type", "llava")
        return LlavaConfig(**values) if model_type == "llava" else AutoConfig.for_model(model_type, **values)
    raise TypeError(f"expected a transformers config or a dict, got {type(config).__name__}")


def meta_model(config: Any):
    """The image-text-to-text model of ``config`` built on the ``meta`` device: every shape, no memory."""
    from transformers import AutoModelForImageTextToText

    config = as_config(config)
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def parameter_count(config: Any) -> int:
    """Exact number of parameters (tied weights counted once) of the model ``config`` describes."""
    return sum(p.numel() for p in meta_model(config).parameters())


def parameter_breakdown(config: Any) -> dict[str, int]:
    """Parameters per top-level part: vision tower, projector, language model, output head (lm_head), and any
    parameter held directly (LLaVA-NeXT's image_newline)."""
    model = meta_model(config)
    counted: set[int] = set()
    parts: dict[str, int] = {}
    inner = getattr(model, "model", model)
    for name, module in [*inner.named_children(), *[(n, m) for n, m in model.named_children() if n != "model"]]:
        fresh = [p for p in module.parameters() if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        parts[name] = sum(p.numel() for p in fresh)
    for owner in (inner, model):  # parameters held directly, e.g. LLaVA-NeXT's image_newline
        for name, p in owner.named_parameters(recurse=False):
            if id(p) not in counted:
                counted.add(id(p))
                parts[name] = p.numel()
    return parts


def describe_config(config: Any) -> dict[str, Any]:
    """The facts CLVA cares about: decoder layers and heads, KV heads, head size, visual tokens per image."""
    config = as_config(config)
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    facts: dict[str, Any] = {
        "model_type": config.model_type,
        "decoder_layers": int(text.num_hidden_layers),
        "attention_heads": heads,
        "key_value_heads": int(getattr(text, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        "hidden_size": int(text.hidden_size),
        "visual_tokens_per_image": None,
        "visual_tokens_note": "",
    }
    tokens, note = _visual_tokens(config)
    facts["visual_tokens_per_image"], facts["visual_tokens_note"] = tokens, note
    return facts


def _visual_tokens(config) -> tuple[int | None, str]:
    """Visual tokens one image takes (``None`` when the image size decides) and how they are counted."""
    vision = getattr(config, "vision_config", None)
    model_type = config.model_type
    side = int(vision.image_size) // int(vision.patch_size) if hasattr(vision, "image_size") else None
    if model_type == "llava":
        full = getattr(config, "vision_feature_select_strategy", "default") == "full"
        return side * side + int(full), "one square grid" + (" + the CLS token" if full else "")
    if model_type in ("llava_next", "llava_onevision"):
        return None, f"{side * side} for the base view + tiles of {side * side} and newline tokens (any resolution)"
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
        return None, f"(height / {patch * merge}) x (width / {patch * merge}): dynamic resolution"
    if model_type == "gemma3":
        return int(config.mm_tokens_per_image), "pooled to a fixed grid (pan-and-scan crops add more)"
    if model_type == "paligemma":
        return side * side, "one square grid"
    if model_type in ("idefics3", "smolvlm"):
        per_tile = side * side // int(config.scale_factor) ** 2
        return None, f"{per_tile} per tile: the global view + up to N x N tiles (image splitting)"
    return None, ""


def family_table() -> list[dict[str, Any]]:
    """One row per served family, from a public checkpoint's architecture (``reference_configs``), all computed on
    the ``meta`` device: decoder layers and heads, visual tokens, parameters, fp16 and 4-bit weight memory."""
    from .reference_configs import REFERENCE_CONFIGS

    rows = []
    for model_id, values in REFERENCE_CONFIGS.items():
        facts, estimate = describe_config(values), memory_estimate(values)
        family = FAMILIES[facts["model_type"]]
        rows.append({"family": family.name, "example id": model_id, "class": family.model_class,
                     "decoder layers": facts["decoder_layers"], "heads (KV)":
                     f"{facts['attention_heads']} ({facts['key_value_heads']})",
                     "visual tokens / image": facts["visual_tokens_per_image"] or facts["visual_tokens_note"],
                     "parameters (B)": round(estimate["parameters"] / 1e9, 2),
                     "fp16 GB": round(estimate["weights_fp16"] / 1e9, 1),
                     "4-bit GB (est.)": round(estimate["weights_4bit"] / 1e9, 1),
                     "tiny stand-in": family.tiny_kind})
    return rows


BNB_4BIT_BLOCK = 64  # bitsandbytes' default 4-bit block size: one float32 scale (absmax) per 64 weights


def memory_estimate(config: Any, *, kv_dtype_bytes: int = 2) -> dict[str, int]:
    """Weight memory (bytes) of ``config``'s model in fp32 / fp16 / bf16 / 4-bit, and the KV cache per token.

    * fp32 / fp16 / bf16: parameters x 4 / 2 / 2 bytes (exact for the weights alone).
    * 4-bit: an **estimate** of bitsandbytes NF4 as ``load_model(..., quantization="4bit")`` sets it up: every
      ``nn.Linear`` weight except the output head packed at half a byte per weight plus one float32 scale per
      ``BNB_4BIT_BLOCK`` weights; everything else (embeddings, norms, biases, convolutions, lm_head) in fp16.
    * ``kv_cache_per_token``: 2 (K and V) x layers x KV heads x head size x ``kv_dtype_bytes`` (fp16 default),
      per token of one sequence.

    Activations, the KV cache and framework overhead come on top of the weights.
    """
    config = as_config(config)
    model = meta_model(config)
    parameters = sum(p.numel() for p in model.parameters())
    output_head = model.get_output_embeddings()
    quantized_ids: set[int] = set()
    packed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output_head and id(module.weight) not in quantized_ids:
            quantized_ids.add(id(module.weight))
            n = module.weight.numel()
            packed += math.ceil(n / 2) + math.ceil(n / BNB_4BIT_BLOCK) * 4
    quantized = sum(p.numel() for p in model.parameters() if id(p) in quantized_ids)
    facts = describe_config(config)
    kv = 2 * facts["decoder_layers"] * facts["key_value_heads"] * facts["head_dim"] * kv_dtype_bytes
    return {
        "parameters": parameters,
        "parameters_quantized_in_4bit": quantized,
        "weights_fp32": 4 * parameters,
        "weights_fp16": 2 * parameters,
        "weights_bf16": 2 * parameters,
        "weights_4bit": packed + 2 * (parameters - quantized),
        "kv_cache_per_token": kv,
    }


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: free GPU memory; CPU: available RAM), ``None`` where unknown (MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def weights_bytes(estimate: dict[str, int], device: torch.device, dtype=None, quantization: str | None = None) -> int:
    """The weight bytes ``load_model`` would place on ``device`` with these options (see :func:`memory_estimate`)."""
    if quantization == "4bit":
        return estimate["weights_4bit"]
    if quantization == "8bit":  # int8 linear weights, the rest in fp16: between fp16 and 4-bit
        return estimate["weights_fp16"] - estimate["parameters_quantized_in_4bit"]
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return estimate["parameters"] * torch.tensor([], dtype=dtype).element_size()


# --- loading ------------------------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _fits(model_id: str, device: torch.device, dtype, quantization: str | None) -> str | None:
    """``None`` when the weights fit in the device's free memory, else the reason they do not."""
    from transformers import AutoConfig

    free = available_memory(device)
    if free is None:
        return None
    need = weights_bytes(memory_estimate(AutoConfig.from_pretrained(model_id)), device, dtype, quantization)
    if need <= free:
        return None
    hint = "use a GPU" if device.type == "cpu" else "try quantization='4bit' or a smaller model"
    return (f"{model_id}'s weights need about {_gb(need)} on {device.type}, but only {_gb(free)} is free "
            f"({hint}; llava-hf/llava-interleave-qwen-0.5b-hf is the small option)")


def load_real_or_stand_in(
    model_id: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    quantization: str | None = None,
    stand_in: str | None = None,
    timeout: float = 2.0,
    check_memory: bool = True,
    folder: str | os.PathLike | None = None,
) -> tuple[LoadedModel, str]:
    """Load ``model_id`` (hub id or local folder) or, when that cannot work here, a tiny stand-in; say which.

    Returns ``(loaded, why)``. The stand-in is a random-weight model of the same Hugging Face class
    (``stand_in``: a :data:`clva_lite.models.tiny.TINY_KINDS` kind; by default picked from ``model_id``), written to
    ``folder`` (a temporary folder by default) and read back with ``load_model`` like a hub snapshot. It is used
    when ``CI`` or ``HF_HUB_OFFLINE`` is set, the hub does not answer within ``timeout`` seconds, the weights do
    not fit in free memory (``check_memory``), or the download fails. A local folder is always loaded as is.
    Unsupported models are a ``ValueError``.
    """
    if stand_in is not None and stand_in not in TINY_KINDS:
        raise ValueError(f"unknown stand-in kind {stand_in!r}; use one of {TINY_KINDS}")
    target = torch.device(device) if device is not None else default_device()
    local = Path(str(model_id)).expanduser()
    if local.is_dir():
        return (load_model(local, device=target, dtype=dtype, quantization=quantization),
                f"loaded the local folder {local}")
    kind = stand_in or stand_in_kind(model_id)

    why_not = offline_reason(timeout)
    if why_not is None:
        try:
            if check_memory:
                why_not = _fits(model_id, target, dtype, quantization)
            if why_not is None:
                loaded = load_model(model_id, device=target, dtype=dtype, quantization=quantization)
                return loaded, f"loaded {model_id} from the Hugging Face hub: real weights"
        except OSError as error:
            if kind is None:
                raise
            why_not = f"loading {model_id} failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    if kind is None:
        raise ValueError(
            f"cannot tell which class {model_id!r} is without the hub ({why_not}), so no stand-in can be picked: "
            f"pass stand_in=one of {TINY_KINDS}, or a local folder. " + _supported_text()
        )
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"clva-stand-in-{kind}-"))
    loaded = load_model(save_tiny_model(kind, folder), device=target, dtype=dtype)
    loaded.name = f"random-weight stand-in for {model_id} ({kind})"
    extra = " (quantization is not applied to the stand-in)" if quantization else ""
    return loaded, (f"{why_not}: loaded a tiny random-weight stand-in of the same class instead "
                    f"({type(loaded.model).__name__}, tiny kind {kind!r}){extra}. Its answers are meaningless; "
                    f"only the code path is the real one")
