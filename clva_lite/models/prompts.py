"""Prompt building for every served family, in one place.

Chat models' processors carry a chat template (the toy's renders ``"<image> question : is there a star"``,
LLaVA-1.5's ``"USER: <image>\\n... ASSISTANT:"``, Qwen's ``<|vision_start|><|image_pad|>...``, Gemma 3's
``<start_of_turn>user\\n<start_of_image>...``), so a prompt is the user turn ``[image, question]`` rendered with
``add_generation_prompt=True``. PaliGemma is not a chat model: its prompt is ``"<image>" + question`` and its
processor adds the image tokens and BOS (mix checkpoints expect task prefixes such as ``"answer en ..."``).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image


def build_prompt(processor: Any, question: str, *, chat: bool = True) -> str:
    """The text prompt for one image and one question (``chat=False``: PaliGemma's ``"<image>" + question``)."""
    if not chat:
        return processor.image_token + question
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            "this processor has no chat template, so clva_lite cannot build a prompt for it; set "
            "processor.chat_template (see the model card for the prompt format)"
        )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _check_images(images: list) -> list[Image.Image]:
    checked = []
    for k, image in enumerate(images):
        if isinstance(image, Image.Image):
            checked.append(image.convert("RGB"))
        else:
            raise TypeError(
                f"image {k} is a {type(image).__name__}; pass PIL.Image.Image objects "
                "(e.g. PIL.Image.open(path) or a toy scene's .image())"
            )
    return checked


def build_inputs(loaded: Any, images: list, questions: list[str]):
    """Processor output for a batch of (image, question) pairs, left-padded, on the model's device.

    Returns a ``BatchFeature`` with ``input_ids`` / ``attention_mask`` of shape (batch, seq) and the family's
    image tensors.
    """
    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(images, (list, tuple)):
        images = [images]
    if len(questions) == 0:
        raise ValueError("no questions given: pass at least one image and one question, e.g. "
                         "loaded.inputs([image], ['is there a star in the image ?'])")
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions; pass one image per question")
    from .families import FAMILIES

    family = FAMILIES.get(loaded.family)
    prompts = [build_prompt(loaded.processor, q, chat=family is None or family.chat) for q in questions]
    images = _check_images(list(images))
    if family is not None and family.images_per_prompt_list:
        images = [[image] for image in images]
    batch = loaded.processor(images=images, text=prompts, return_tensors="pt", padding=True)
    batch.pop("labels", None)  # PaliGemma's processor adds training labels; inference has none
    dtype = next(loaded.model.parameters()).dtype
    return batch.to(loaded.device).to(dtype) if dtype.is_floating_point else batch.to(loaded.device)


def decode_new_tokens(loaded: Any, batch, output: torch.Tensor) -> list[str]:
    """Decode only the generated part of ``output`` (shape (batch, prompt + new))."""
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    texts = loaded.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [t.strip() for t in texts]
