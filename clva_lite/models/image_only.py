"""Processors for images only, for families whose stock processor also builds a video processor.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision and SmolVLM2 processors take a video processor, and those classes need
torchvision; without it the processor cannot even be constructed. clva-lite feeds images only, so each class here
declares just the image processor and the tokenizer (transformers reads a processor's parts from its ``__init__``
signature) and reuses the stock class for everything else. Each keeps the stock class's name, so a folder it saves
reads like a hub snapshot and a machine with torchvision loads the full stock processor from it.
"""

from __future__ import annotations

import transformers
from transformers.processing_utils import ProcessorMixin

# ``super().__init__`` of each stock class passes (image_processor, tokenizer, video_processor) on to
# ProcessorMixin, which pairs them with the parts these classes declare; the video processor (None) has no part.


class Qwen2VLProcessor(transformers.Qwen2VLProcessor):
    """Qwen2-VL's processor for images only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLProcessor(transformers.Qwen2_5_VLProcessor):  # noqa: N801 - the stock class's name
    """Qwen2.5-VL's processor for images only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen3VLProcessor(transformers.Qwen3VLProcessor):
    """Qwen3-VL's processor for images only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class LlavaOnevisionProcessor(transformers.LlavaOnevisionProcessor):
    """LLaVA-OneVision's processor for images only."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)


class SmolVLMProcessor(transformers.SmolVLMProcessor):
    """SmolVLM2's processor for images only."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len, chat_template=chat_template,
                         **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # The stock method reads frame counts off the video processor; an image conversation needs none.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


IMAGE_ONLY: dict[str, type[ProcessorMixin]] = {
    cls.__name__: cls for cls in (Qwen2VLProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor, LlavaOnevisionProcessor,
                                 SmolVLMProcessor)}


def image_only_processor(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """The images-only version of the stock processor class ``base``."""
    if base.__name__ not in IMAGE_ONLY:
        raise ValueError(f"no images-only version of {base.__name__}; known: {', '.join(IMAGE_ONLY)}")
    return IMAGE_ONLY[base.__name__]


def load_image_only_processor(source: str, base: type[ProcessorMixin]) -> ProcessorMixin:
    """``base``'s processor for images only, read from a hub id or folder (image processor, tokenizer, template)."""
    return image_only_processor(base).from_pretrained(source)
