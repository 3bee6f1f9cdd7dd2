"""Baselines in the same harness as CLVA.

* **PAI** - "Paying More Attention to Image" (Liu et al., ECCV 2024; reference code LALBJ/PAI). In decoder layers
  ``[start_layer, L)`` the current query's logits on image keys become ``z + alpha * |z|`` (alpha = 0.2).
  Optional image-free guidance on the output: with log-softmax scores ``s`` (with image) and ``u`` (same prompt,
  image tokens removed, a second pass with its own KV cache and without the attention change),
  ``gamma * (s - u) + u`` (gamma = 1.1), keeping only tokens with ``s >= log(0.1) + max(s)``.
* **VCD** - Visual Contrastive Decoding (Leng et al., CVPR 2024; reference code DAMO-NLP-SG/VCD). A second pass on
  the same prompt with a diffusion-noised image (step 500 of 1000): ``(1 + alpha) * l(y|v, x) - alpha * l(y|v', x)``
  (alpha = 1), keeping only tokens with ``l(y|v, x) >= log(beta) + max`` (plausibility cut-off beta = 0.1).

The guidance passes are ``LogitsProcessor`` objects for ``model.generate``; they pause any attached capture or
intervention (see :func:`clva_lite.attention.function.paused`), so only the main pass is recorded or steered.
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .capture import unwrap
from .function import attached, paused
from .spans import VisualSpan, image_token_id


@dataclass(frozen=True)
class PAIConfig:
    alpha: float = 0.2
    start_layer: int = 2
    guidance: float | None = 1.1  # gamma; None switches the image-free guidance off

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"PAI alpha={self.alpha} must be a finite number >= 0")
        if self.start_layer < 0:
            raise ValueError(f"PAI start_layer={self.start_layer} must be >= 0")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 1):
            raise ValueError(f"PAI guidance gamma={self.guidance} must be >= 1 (1 = no guidance) or None")


@dataclass(frozen=True)
class VCDConfig:
    alpha: float = 1.0
    beta: float = 0.1
    noise_step: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"VCD alpha={self.alpha} must be a finite number >= 0")
        if not 0 < self.beta <= 1:
            raise ValueError(f"VCD beta={self.beta} must be in (0, 1]")
        if not 0 <= self.noise_step < 1000:
            raise ValueError(f"VCD noise_step={self.noise_step} must be in [0, 1000)")


class PAIIntervention:
    """``z + alpha * |z|`` on the current query's image-key logits in layers >= ``start_layer``."""

    def __init__(self, config: PAIConfig, num_layers: int):
        if config.start_layer >= num_layers:
            raise ValueError(f"PAI start_layer={config.start_layer} is beyond the decoder's {num_layers} layers")
        self.config = config

    def begin_step(self, step: int, prompt: int) -> None:
        pass

    needs_visual_share = False

    def wants_visual(self, layer: int) -> bool:
        return False

    def observe_visual(self, layer: int, distribution: torch.Tensor, share: torch.Tensor | None) -> None:
        pass

    def wants_logits(self, layer: int) -> bool:
        return layer >= self.config.start_layer

    def acts_on(self, layer: int) -> bool:
        return layer >= self.config.start_layer

    def bias(self, layer: int, logits: torch.Tensor | None, span: VisualSpan) -> torch.Tensor:
        visual_logits = span.take(logits)
        return self.config.alpha * visual_logits.abs()


@contextmanager
def pai_attention(model, config: PAIConfig | None = None):
    """PAI's attention amplification inside the block (the guidance, if any, is :func:`pai_guidance`)."""
    config = config or PAIConfig()
    hf_model = unwrap(model)
    num_layers = int(getattr(hf_model.config, "text_config", hf_model.config).num_hidden_layers)
    with attached(hf_model, intervention=PAIIntervention(config, num_layers)) as state:
        yield state


# Qwen's multimodal rotary positions: the contrastive pass cannot reproduce them (see ContrastivePass).
MROPE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


class ContrastivePass(LogitsProcessor):
    """Runs a second input through the model alongside generation, with its own KV cache.

    ``combine(scores, contrast_logits)`` returns the new scores. The contrast input is left-padded like the main
    one; at each step the newly generated token is appended to it.
    """

    def __init__(self, model, contrast_inputs: dict, combine, first_pass=None):
        model_type = getattr(model.config, "model_type", None)
        if model_type in MROPE_MODEL_TYPES:
            raise NotImplementedError(
                f"contrastive guidance (VCD, PAI's image-free guidance) is not supported on {model_type!r} models: "
                "their M-RoPE positions (time, height, width) are not the mask's running count that the second pass "
                "uses, so its logits would be wrong. Use PAI without guidance (PAIConfig(guidance=None)) or CLVA."
            )
        self.model = model
        self.inputs = dict(contrast_inputs)
        self.combine = combine
        self.cache = None
        self.mask = self.inputs["attention_mask"]
        self.prompt_length: int | None = None
        self.first_pass = first_pass  # model -> output of the prompt's pass (a shared-prefix continuation)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        with paused(self.model):
            if self.cache is None and self.first_pass is not None:
                out = self.first_pass(self.model)
                self.prompt_length = input_ids.shape[1]
            elif self.cache is None:
                batch = self.inputs
                position_ids = (self.mask.long().cumsum(-1) - 1).clamp_min(0)
                out = self.model(**batch, position_ids=position_ids, use_cache=True)
                self.prompt_length = input_ids.shape[1]
            else:
                self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
                position_ids = (self.mask.long().cumsum(-1) - 1)[:, -1:]
                out = self.model(input_ids=input_ids[:, -1:], attention_mask=self.mask, position_ids=position_ids,
                                 **{_cache_argument(self.model): self.cache}, use_cache=True)
        self.cache = _returned_cache(out)
        return self.combine(scores, out.logits[:, -1, :].float())


def _cache_argument(model) -> str:
    """The forward keyword for the KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(output):
    """The KV cache of a forward output, read without touching the deprecated alias where ``cache`` exists."""
    names = output.keys() if hasattr(output, "keys") else ()
    return output["cache"] if "cache" in names else output.past_key_values


def pai_guidance_combine(gamma: float, cutoff: float = 0.1):
    def combine(scores: torch.Tensor, unconditional: torch.Tensor) -> torch.Tensor:
        s = torch.log_softmax(scores.float(), dim=-1)
        u = torch.log_softmax(unconditional, dim=-1)
        guided = gamma * (s - u) + u
        keep = s >= math.log(cutoff) + s.max(dim=-1, keepdim=True).values
        return guided.masked_fill(~keep, float("-inf"))

    return combine


def vcd_combine(alpha: float, beta: float):
    def combine(scores: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        contrasted = (1 + alpha) * scores - alpha * contrast
        keep = scores >= math.log(beta) + scores.max(dim=-1, keepdim=True).values
        return contrasted.masked_fill(~keep, float("-inf"))

    return combine


def without_image(inputs, image_token_id: int, pad_token_id: int) -> dict:
    """The same prompts with their image tokens removed, left-padded again (PAI's image-free input)."""
    rows = []
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
        rows.append(ids[(ids != image_token_id) & mask.bool()])
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=inputs["input_ids"].dtype)
    attention_mask = torch.zeros((len(rows), length), dtype=inputs["attention_mask"].dtype)
    for k, row in enumerate(rows):
        input_ids[k, length - len(row):] = row
        attention_mask[k, length - len(row):] = 1
    device = inputs["input_ids"].device
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def diffusion_noise(pixel_values: torch.Tensor, step: int = 500, seed: int = 0) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) of the processed image at ``step`` of 1000 (VCD's sigmoid beta schedule).

    pixel_values: (batch, ...). Every row gets the same noise draw (``seed``), so an image's noised version does not
    depend on which other images share its batch."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, dim=0)[step]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(pixel_values.shape[1:], generator=generator).to(pixel_values.device, pixel_values.dtype)
    return alpha_bar.sqrt() * pixel_values + (1 - alpha_bar).sqrt() * noise


def pai_guidance(loaded, inputs, config: PAIConfig | None = None) -> LogitsProcessorList:
    """PAI's image-free guidance as a logits processor for ``generate`` (empty when ``guidance`` is None).

    ``loaded``: a LoadedModel or a bare Hugging Face model (then the pad id comes from its generation config).
    """
    config = config or PAIConfig()
    if config.guidance is None:
        return LogitsProcessorList()
    hf_model = unwrap(loaded)
    processor = getattr(loaded, "processor", None)
    pad = processor.tokenizer.pad_token_id if processor is not None else hf_model.generation_config.pad_token_id
    contrast = without_image(inputs, image_token_id(hf_model.config), pad or 0)
    return LogitsProcessorList([ContrastivePass(hf_model, contrast, pai_guidance_combine(config.guidance))])


def vcd_processor(loaded, inputs, config: VCDConfig | None = None, *, shared=None) -> LogitsProcessorList:
    """VCD as a logits processor for ``generate``: the contrast pass sees a diffusion-noised image.

    ``shared``: a :class:`~clva_lite.eval.prefix.SharedPrefixBatch` whose ``inputs`` these are; the contrast pass
    then continues the noised image's cached prefix."""
    config = config or VCDConfig()
    hf_model = unwrap(loaded)
    combine = vcd_combine(config.alpha, config.beta)
    if shared is not None:
        variant = ("vcd", config.noise_step, config.seed)
        return LogitsProcessorList([ContrastivePass(
            hf_model, dict(inputs), combine, first_pass=lambda model: shared.continue_prompt(model,
                                                                                            shared.cache(variant)))])
    contrast = {k: v for k, v in inputs.items()}
    contrast["pixel_values"] = diffusion_noise(inputs["pixel_values"], config.noise_step, config.seed)
    return LogitsProcessorList([ContrastivePass(hf_model, contrast, combine)])
