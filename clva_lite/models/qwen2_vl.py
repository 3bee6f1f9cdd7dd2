"""Qwen2-VL's processor for images only.

``Qwen2VLProcessor`` also builds a video processor, and that class needs torchvision; without it the processor
cannot even be constructed. clva-lite feeds images only, so this subclass declares just the image processor
and the tokenizer (transformers reads a processor's parts from its ``__init__`` signature) and reuses
``Qwen2VLProcessor`` for everything else.
"""

from __future__ import annotations

from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin


class Qwen2VLImageProcessorOnly(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token)
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_image_only_processor(source: str) -> Qwen2VLImageProcessorOnly:
    """Build the image-only processor from a hub id or folder (image processor, tokenizer, chat template)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    try:
        image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    except (TypeError, ValueError):
        image_processor = AutoImageProcessor.from_pretrained(source)
    chat_template = getattr(tokenizer, "chat_template", None)
    try:
        from transformers.utils import cached_file

        template_file = cached_file(source, "chat_template.jinja", _raise_exceptions_for_missing_entries=False)
        if template_file:
            with open(template_file, encoding="utf-8") as handle:
                chat_template = handle.read()
    except OSError:
        pass
    return Qwen2VLImageProcessorOnly(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=chat_template)
