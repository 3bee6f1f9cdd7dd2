"""The model families clva-lite serves: one generic path, and per-family knowledge only where it is needed.

Visual tokens are found generically (the config's image token in ``input_ids``, see
:func:`clva_lite.attention.spans.find_visual_span`); what differs per family is listed here: the processor (some
stock processors also build a video processor), how images are passed (one list per prompt), how a prompt is
written (PaliGemma has no chat template), and whether the contrastive baselines can run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..attention.pai_vcd import MROPE_MODEL_TYPES


@dataclass(frozen=True)
class Family:
    model_type: str
    name: str
    model_class: str
    hub_ids: tuple[str, ...]
    tiny_kind: str
    video_processor: str | None = None  # the stock processor class that also needs a video processor
    images_per_prompt_list: bool = False  # the processor takes one list of images per prompt
    chat: bool = True  # False: the prompt is "<image>" + question (PaliGemma's prefix format)

    @property
    def contrastive(self) -> bool:
        """Whether VCD and PAI's image-free guidance (a second pass with its own KV cache) are served."""
        return self.model_type not in MROPE_MODEL_TYPES


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llava", "LLaVA-1.5, llava-interleave", "LlavaForConditionalGeneration",
           ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf", "llava-hf/llava-interleave-qwen-0.5b-hf"),
           "llava-llama"),
    Family("llava_next", "LLaVA-NeXT (1.6)", "LlavaNextForConditionalGeneration",
           ("llava-hf/llava-v1.6-mistral-7b-hf", "llava-hf/llava-v1.6-vicuna-7b-hf"), "llava-next"),
    Family("llava_onevision", "LLaVA-OneVision", "LlavaOnevisionForConditionalGeneration",
           ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf"),
           "llava-onevision", video_processor="LlavaOnevisionProcessor"),
    Family("qwen2_vl", "Qwen2-VL", "Qwen2VLForConditionalGeneration",
           ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"), "qwen2-vl", video_processor="Qwen2VLProcessor"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration",
           ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"), "qwen2.5-vl",
           video_processor="Qwen2_5_VLProcessor"),
    Family("qwen3_vl", "Qwen3-VL", "Qwen3VLForConditionalGeneration",
           ("Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"), "qwen3-vl", video_processor="Qwen3VLProcessor"),
    Family("gemma3", "Gemma 3", "Gemma3ForConditionalGeneration",
           ("google/gemma-3-4b-it", "google/gemma-3-12b-it"), "gemma3", images_per_prompt_list=True),
    Family("paligemma", "PaliGemma, PaliGemma 2", "PaliGemmaForConditionalGeneration",
           ("google/paligemma2-3b-mix-224", "google/paligemma-3b-mix-224"), "paligemma", chat=False),
    Family("idefics3", "SmolVLM, Idefics3", "Idefics3ForConditionalGeneration",
           ("HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceTB/SmolVLM-256M-Instruct",
            "HuggingFaceM4/Idefics3-8B-Llama3"), "idefics3", images_per_prompt_list=True),
    Family("smolvlm", "SmolVLM2", "SmolVLMForConditionalGeneration",
           ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"), "smolvlm",
           video_processor="SmolVLMProcessor", images_per_prompt_list=True),
)}


def served_text() -> str:
    """One line naming every served family and its model class (for error messages)."""
    return "; ".join(f"{f.name} ({f.model_class}, model_type {f.model_type!r})" for f in FAMILIES.values())


def family_of(config, name: str) -> Family:
    """The served family of a config, or a ValueError that lists the served ones."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise ValueError(f"{name!r} is a {model_type!r} model, which clva_lite does not support. Supported families: "
                     f"{served_text()}.")
