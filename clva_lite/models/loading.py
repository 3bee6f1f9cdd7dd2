"""Load a vision-language model and its processor: the bundled toy, a hub id or a local path.

``load_model`` returns a :class:`LoadedModel` that carries what later code needs: the model (eval mode, grads
off), the processor, the model family (which decides how visual tokens are found and prompts are built) and the
image-token id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attention.spans import image_token_id
from .families import FAMILIES, family_of
from .image_only import load_image_only_processor
from .prompts import build_inputs, decode_new_tokens

SUPPORTED_FAMILIES: dict[str, str] = {k: f"{f.model_class} ({', '.join(f.hub_ids)})" for k, f in FAMILIES.items()}
TOY_NAMES = ("toy", "toy-untrained")
TOY_PATH_ENV = "CLVA_LITE_TOY_PATH"


def default_toy_path() -> Path:
    """``data/toy-llava`` of this checkout, or ``$CLVA_LITE_TOY_PATH`` when set."""
    if os.environ.get(TOY_PATH_ENV):
        return Path(os.environ[TOY_PATH_ENV])
    return Path(__file__).resolve().parents[2] / "data" / "toy-llava"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class LoadedModel:
    """A model with its processor and the facts needed to find its visual tokens."""

    model: Any
    processor: Any
    family: str
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_token_id(self) -> int:
        return image_token_id(self.model.config)

    @property
    def toy_world(self) -> str | None:
        """The toy world the model was trained in (``config.toy_world``; ``"plain"`` for the bundled toy), or None
        for a model that is not a toy."""
        world = getattr(self.model.config, "toy_world", None)
        return world if world is not None else ("plain" if self.name in TOY_NAMES else None)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.text_config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.text_config.num_attention_heads)

    def inputs(self, images: list, questions: list[str]):
        """Processed, left-padded batch on the model's device (see :func:`clva_lite.models.prompts.build_inputs`)."""
        return build_inputs(self, images, questions)

    def generate(self, images: list, questions: list[str], *, max_new_tokens: int = 16, **kwargs) -> list[str]:
        """Greedy answers (decoded, special tokens stripped), one per (image, question)."""
        batch = self.inputs(images, questions)
        kwargs.setdefault("do_sample", False)
        output = self.model.generate(**batch, max_new_tokens=max_new_tokens, **kwargs)
        return decode_new_tokens(self, batch, output)


def _family(config: Any, name: str) -> str:
    return family_of(config, name).model_type


def _check_quantization(quantization: str | None, device: torch.device) -> dict:
    if quantization is None:
        return {}
    if quantization not in ("4bit", "8bit"):
        raise ValueError(f"quantization must be None, '4bit' or '8bit', not {quantization!r}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError(
            f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes (CUDA GPU required)"
        ) from None
    if device.type != "cuda":
        raise ValueError(f"quantization={quantization!r} needs a CUDA GPU; this model would load on {device}")
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float16,
                                    bnb_4bit_quant_type="nf4")
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def _load_processor(source: str, family: str) -> Any:
    import transformers
    from transformers import AutoProcessor

    video = FAMILIES[family].video_processor
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (ImportError, ValueError, AttributeError, TypeError, OSError):
        if video is None:
            raise
        processor = None
    if video is not None and not hasattr(processor, "image_processor"):
        # The stock processor also builds a video processor, which needs torchvision; images do not.
        processor = load_image_only_processor(source, getattr(transformers, video))
    if not hasattr(processor, "image_processor"):
        raise ValueError(f"{source!r} has no image processor (processor_config.json / preprocessor_config.json)")
    return processor


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    quantization: str | None = None,
) -> LoadedModel:
    """Load ``"toy"`` (the bundled toy LLaVA), a hub id such as ``"llava-hf/llava-1.5-7b-hf"`` or a local path.

    ``device`` defaults to CUDA, then MPS, then CPU; ``dtype`` to float16 on CUDA and float32 elsewhere;
    ``quantization`` may be ``"4bit"`` or ``"8bit"`` (bitsandbytes, CUDA only). The model is returned in eval mode
    with gradients off.
    """
    from transformers import AutoConfig

    name = str(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" and name not in TOY_NAMES else torch.float32
    quantization_kwargs = _check_quantization(quantization, device)

    if name == "toy-untrained":
        from ..toy.model import build_processor, build_untrained_model

        model = build_untrained_model().to(device=device, dtype=dtype)
        return _finish(LoadedModel(model, build_processor(), "llava", name))

    source = str(default_toy_path()) if name == "toy" else name
    if name == "toy" and not (Path(source) / "config.json").exists():
        raise FileNotFoundError(
            f"the bundled toy model is missing at {source}. Train it with "
            "`python -m clva_lite.toy train --out data/toy-llava` or set "
            f"{TOY_PATH_ENV} to a folder that holds it."
        )
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").exists():
            raise FileNotFoundError(
                f"{local} exists but holds no model (no config.json). Pass a folder written by "
                "save_pretrained, or a hub id such as 'llava-hf/llava-1.5-7b-hf'."
            )
        source = str(local)
    elif any(source.startswith(p) for p in ("/", "./", "../", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"no model folder at {source!r}. Check the path, or pass a hub id.")

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise OSError(
            f"could not load a model config for {name!r}: it is not a local folder, and the hub id could not be "
            f"resolved (unknown id, or no network). Known-good ids: "
            f"{', '.join(f.hub_ids[0] for f in FAMILIES.values())}; the offline toy is 'toy'. "
            f"Cause: {error}"
        ) from error
    family = _family(config, name)

    from transformers import AutoModelForImageTextToText

    load_kwargs: dict[str, Any] = {"dtype": dtype, **quantization_kwargs}
    model = AutoModelForImageTextToText.from_pretrained(source, **load_kwargs)
    if not quantization_kwargs:
        model = model.to(device)
    return _finish(LoadedModel(model, _load_processor(source, family), family, name))


def _finish(loaded: LoadedModel) -> LoadedModel:
    if loaded.toy_world is not None:  # the toy benchmarks draw this model's scenes from the world it learnt
        from ..toy.world import use_world

        use_world(loaded.toy_world)
    loaded.model.eval()
    loaded.model.requires_grad_(False)
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return loaded
