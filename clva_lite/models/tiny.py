"""Tiny random-weight stand-ins of the real model classes, built locally from configs (no download).

They share the real models' Hugging Face classes and prompt formats, so the code path of
``load_model("llava-hf/llava-1.5-7b-hf")`` can be exercised offline: ``save_tiny_model(kind, folder)`` writes
a folder that ``load_model(folder)`` reads through ``from_pretrained`` exactly like a hub snapshot.

Kinds: ``"llava-llama"`` (LLaVA-1.5: CLIP + Llama), ``"llava-qwen2"`` (llava-interleave-qwen: SigLIP + Qwen2),
``"qwen2-vl"`` (Qwen2-VL with its own vision tower and M-RoPE).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..toy.model import vocabulary

TINY_KINDS = ("llava-llama", "llava-qwen2", "qwen2-vl")
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s> {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>", "<|endoftext|>")


def _tokenizer(kind: str) -> PreTrainedTokenizerFast:
    words = vocabulary() + ["USER:", "ASSISTANT:", "user", "assistant"]
    if kind == "qwen2-vl":
        words += list(QWEN_SPECIAL)
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = ["<pad>", "<s>", "</s>", "<unk>", "<image>"] + (list(QWEN_SPECIAL) if kind == "qwen2-vl" else [])
    backend.add_special_tokens(special)
    extra = {"image_token": "<|image_pad|>" if kind == "qwen2-vl" else "<image>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", extra_special_tokens=extra,
    )


def build_tiny_model(kind: str, seed: int = 0):
    """(model, processor) of a tiny random-weight model of ``kind`` (one of ``TINY_KINDS``)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        SiglipVisionConfig,
    )

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; use one of {TINY_KINDS}")
    torch.manual_seed(seed)
    tokenizer = _tokenizer(kind)
    ids = tokenizer.get_vocab()
    text_kwargs = dict(vocab_size=len(ids), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    if kind == "qwen2-vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        from .qwen2_vl import Qwen2VLImageProcessorOnly

        config = Qwen2VLConfig(
            text_config={**text_kwargs, "model_type": "qwen2_vl_text",
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [1, 1, 2]}},
            vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8,
                           "spatial_merge_size": 2, "temporal_patch_size": 2},
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        )
        model = Qwen2VLForConditionalGeneration(config)
        image_processor = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                                   min_pixels=64 * 64, max_pixels=64 * 64)
        processor = Qwen2VLImageProcessorOnly(image_processor=image_processor, tokenizer=tokenizer,
                                              chat_template=QWEN_CHAT_TEMPLATE)
    else:
        if kind == "llava-llama":
            from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

            vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
            text = LlamaConfig(**text_kwargs)
            strategy, extra_tokens, layer = "default", 1, -2
            image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        else:
            from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

            vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8)
            text = Qwen2Config(**text_kwargs)
            strategy, extra_tokens, layer = "full", 0, -1
            image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
        config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                             vision_feature_select_strategy=strategy, vision_feature_layer=layer,
                             image_seq_length=16)
        model = LlavaForConditionalGeneration(config)
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy=strategy,
                                   num_additional_image_tokens=extra_tokens, chat_template=LLAVA_CHAT_TEMPLATE)
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.eos_token_id = ids["</s>"]
    return model.eval(), processor


def save_tiny_model(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``kind`` model + processor to ``folder`` (as ``save_pretrained`` does for hub models)."""
    folder = Path(folder)
    model, processor = build_tiny_model(kind, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
