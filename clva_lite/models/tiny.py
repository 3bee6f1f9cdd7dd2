"""Tiny random-weight stand-ins of the real model classes, built locally from configs (no download).

They share the real models' Hugging Face classes, processors and prompt formats, so the code path of
``load_model("llava-hf/llava-1.5-7b-hf")`` (or any served family) can be exercised offline:
``save_tiny_model(kind, folder)`` writes a folder that ``load_model(folder)`` reads through ``from_pretrained``
exactly like a hub snapshot. Every stand-in has a 4-layer decoder with 4 query and 2 key/value heads, 32 x 32 image
tiles of 8 px patches, and takes the toy's 64 x 64 scenes.

Kinds (``TINY_KINDS``) and the family each stands in for:

* ``"llava-llama"`` LLaVA-1.5 (CLIP + Llama); ``"llava-qwen2"`` llava-interleave-qwen (SigLIP + Qwen2);
* ``"llava-next"`` LLaVA-NeXT (any-resolution tiles + base view, newline tokens);
* ``"llava-onevision"`` LLaVA-OneVision (SigLIP + Qwen2, any-resolution);
* ``"qwen2-vl"`` / ``"qwen2.5-vl"`` / ``"qwen3-vl"`` Qwen2-VL / Qwen2.5-VL / Qwen3-VL (own vision tower, merged
  patches, M-RoPE; Qwen3-VL also feeds vision features into early decoder layers, "deepstack");
* ``"gemma3"`` Gemma 3 (SigLIP, pooled image tokens, bidirectional attention inside an image, sliding windows);
* ``"paligemma"`` PaliGemma (SigLIP + Gemma, prefix-LM: no chat template);
* ``"idefics3"`` / ``"smolvlm"`` SmolVLM (Idefics3 class) / SmolVLM2 (image splitting: 2 x 2 tiles + global view,
  interleaved with row/column tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..toy.model import vocabulary
from .image_only import image_only_processor

TINY_KINDS = ("llava-llama", "llava-qwen2", "llava-next", "llava-onevision", "qwen2-vl", "qwen2.5-vl", "qwen3-vl",
              "gemma3", "paligemma", "idefics3", "smolvlm")
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
GEMMA_CHAT_TEMPLATE = (
    "{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
IDEFICS_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ 'User:' if message['role'] == 'user' else 'Assistant:' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
QWEN_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>", "<|endoftext|>")
GEMMA_SPECIAL = ("<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>")
IDEFICS_SPECIAL = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "User:", "Assistant:",
                   *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
# Special tokens and tokenizer attributes (``extra_special_tokens``) per kind.
_SPECIAL = {"qwen2-vl": (QWEN_SPECIAL, {"image_token": "<|image_pad|>"}),
            "qwen2.5-vl": (QWEN_SPECIAL, {"image_token": "<|image_pad|>"}),
            "qwen3-vl": (QWEN_SPECIAL, {"image_token": "<|image_pad|>"}),
            "gemma3": (GEMMA_SPECIAL, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                       "image_token": "<image_soft_token>"}),
            "llava-onevision": (("<video>",), {"image_token": "<image>", "video_token": "<video>"}),
            "idefics3": (IDEFICS_SPECIAL, {"image_token": "<image>"}),
            "smolvlm": (IDEFICS_SPECIAL, {"image_token": "<image>"})}
TILE = 32  # image tile side in pixels
PATCH = 8
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # LLaVA-NeXT / OneVision any-resolution layouts


def _tokenizer(kind: str) -> PreTrainedTokenizerFast:
    special, attributes = _SPECIAL.get(kind, ((), {"image_token": "<image>"}))
    base = vocabulary() + ["USER:", "ASSISTANT:", "user", "assistant", "model"]
    words = base + [w for w in special if w not in base]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<pad>", "<s>", "</s>", "<unk>", "<image>", *special])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", extra_special_tokens=attributes,
    )


def _text(tokenizer, **extra) -> dict:
    ids = tokenizer.get_vocab()
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], **extra)


def _vision(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=TILE,
                patch_size=PATCH, **extra)


def _pil(module: str, name: str):
    """The PIL-backend image processor class (no torchvision needed)."""
    return getattr(__import__(f"transformers.models.{module}.image_processing_pil_{module}", fromlist=[name]), name)


def _llava(kind: str, t):
    ids = t.get_vocab()
    if kind == "llava-llama":
        vision = transformers.CLIPVisionConfig(**_vision(projection_dim=32))
        text, strategy, extra_tokens, layer = transformers.LlamaConfig(**_text(t)), "default", 1, -2
        images = _pil("clip", "CLIPImageProcessorPil")(size={"shortest_edge": TILE},
                                                       crop_size={"height": TILE, "width": TILE})
    else:
        vision = transformers.SiglipVisionConfig(**_vision())
        text, strategy, extra_tokens, layer = transformers.Qwen2Config(**_text(t)), "full", 0, -1
        images = _pil("siglip", "SiglipImageProcessorPil")(size={"height": TILE, "width": TILE})
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                                      vision_feature_select_strategy=strategy, vision_feature_layer=layer,
                                      image_seq_length=(TILE // PATCH) ** 2)
    processor = transformers.LlavaProcessor(image_processor=images, tokenizer=t, patch_size=PATCH,
                                            vision_feature_select_strategy=strategy,
                                            num_additional_image_tokens=extra_tokens,
                                            chat_template=LLAVA_CHAT_TEMPLATE)
    return transformers.LlavaForConditionalGeneration(config), processor


def _llava_next(kind: str, t):
    ids = t.get_vocab()
    if kind == "llava-next":
        config = transformers.LlavaNextConfig(
            vision_config=transformers.CLIPVisionConfig(**_vision(projection_dim=32)),
            text_config=transformers.LlamaConfig(**_text(t)), image_token_index=ids["<image>"],
            image_grid_pinpoints=PINPOINTS, vision_feature_select_strategy="default", vision_feature_layer=-2,
            image_seq_length=(TILE // PATCH) ** 2)
        images = _pil("llava_next", "LlavaNextImageProcessorPil")(
            size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS)
        processor = transformers.LlavaNextProcessor(
            image_processor=images, tokenizer=t, patch_size=PATCH, vision_feature_select_strategy="default",
            num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
        return transformers.LlavaNextForConditionalGeneration(config), processor
    config = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(**_vision()), text_config=transformers.Qwen2Config(**_text(t)),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full", vision_feature_layer=-1)
    images = _pil("llava_onevision", "LlavaOnevisionImageProcessorPil")(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS)
    processor = image_only_processor(transformers.LlavaOnevisionProcessor)(
        image_processor=images, tokenizer=t, num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full", chat_template=LLAVA_CHAT_TEMPLATE)
    return transformers.LlavaOnevisionForConditionalGeneration(config), processor


def _qwen(kind: str, t):
    ids = t.get_vocab()
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2)
    if kind == "qwen2-vl":
        config = transformers.Qwen2VLConfig(
            text_config={**_text(t), "model_type": "qwen2_vl_text", "rope_parameters": rope},
            vision_config={**vision, "embed_dim": 32}, **tokens)
        model, base = transformers.Qwen2VLForConditionalGeneration(config), transformers.Qwen2VLProcessor
    elif kind == "qwen2.5-vl":
        config = transformers.Qwen2_5_VLConfig(
            text_config={**_text(t), "model_type": "qwen2_5_vl_text", "rope_parameters": rope},
            vision_config={**vision, "intermediate_size": 64, "out_hidden_size": 32, "window_size": 16,
                           "fullatt_block_indexes": [1]}, **tokens)
        model, base = transformers.Qwen2_5_VLForConditionalGeneration(config), transformers.Qwen2_5_VLProcessor
    else:
        config = transformers.Qwen3VLConfig(
            text_config={**_text(t, head_dim=8), "model_type": "qwen3_vl_text",
                         "rope_parameters": {**rope, "mrope_interleaved": True}},
            vision_config={**vision, "intermediate_size": 64, "out_hidden_size": 32, "num_position_embeddings": 64,
                           "deepstack_visual_indexes": [0]}, **tokens)
        model, base = transformers.Qwen3VLForConditionalGeneration(config), transformers.Qwen3VLProcessor
    images = _pil("qwen2_vl", "Qwen2VLImageProcessorPil")(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                                          min_pixels=64 * 64, max_pixels=64 * 64)
    processor = image_only_processor(base)(image_processor=images, tokenizer=t, chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def _gemma(kind: str, t):
    ids = t.get_vocab()
    if kind == "gemma3":
        config = transformers.Gemma3Config(
            text_config=_text(t, head_dim=8, sliding_window=128, sliding_window_pattern=2),
            vision_config=_vision(), mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
            eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"])
        images = _pil("gemma3", "Gemma3ImageProcessorPil")(size={"height": TILE, "width": TILE})
        processor = transformers.Gemma3Processor(image_processor=images, tokenizer=t, image_seq_length=4,
                                                 chat_template=GEMMA_CHAT_TEMPLATE)
        return transformers.Gemma3ForConditionalGeneration(config), processor
    images = _pil("siglip", "SiglipImageProcessorPil")(size={"height": TILE, "width": TILE})
    images.image_seq_length = (TILE // PATCH) ** 2
    processor = transformers.PaliGemmaProcessor(image_processor=images, tokenizer=t)  # adds <loc>/<seg> tokens
    config = transformers.PaliGemmaConfig(
        text_config={**_text(t, head_dim=8), "model_type": "gemma"}, vision_config=_vision(projection_dim=32),
        image_token_index=ids["<image>"], projection_dim=32, hidden_size=32)
    return transformers.PaliGemmaForConditionalGeneration(config), processor


def _idefics(kind: str, t):
    ids = t.get_vocab()
    values = dict(vision_config=_vision(), text_config={**_text(t), "model_type": "llama"}, scale_factor=2,
                  image_token_id=ids["<image>"])
    splitting = dict(do_image_splitting=True, size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE})
    seq_len = (TILE // PATCH) ** 2 // 4
    if kind == "idefics3":
        images = _pil("idefics3", "Idefics3ImageProcessorPil")(**splitting)
        processor = transformers.Idefics3Processor(image_processor=images, tokenizer=t, image_seq_len=seq_len,
                                                   chat_template=IDEFICS_CHAT_TEMPLATE)
        return transformers.Idefics3ForConditionalGeneration(transformers.Idefics3Config(**values)), processor
    images = _pil("smolvlm", "SmolVLMImageProcessorPil")(**splitting)
    processor = image_only_processor(transformers.SmolVLMProcessor)(
        image_processor=images, tokenizer=t, image_seq_len=seq_len, chat_template=IDEFICS_CHAT_TEMPLATE)
    return transformers.SmolVLMForConditionalGeneration(transformers.SmolVLMConfig(**values)), processor


_BUILDERS = {"llava-llama": _llava, "llava-qwen2": _llava, "llava-next": _llava_next,
             "llava-onevision": _llava_next, "qwen2-vl": _qwen, "qwen2.5-vl": _qwen, "qwen3-vl": _qwen,
             "gemma3": _gemma,
             "paligemma": _gemma, "idefics3": _idefics, "smolvlm": _idefics}


def build_tiny_model(kind: str, seed: int = 0):
    """(model, processor) of a tiny random-weight model of ``kind`` (one of ``TINY_KINDS``)."""
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; use one of {TINY_KINDS}")
    torch.manual_seed(seed)
    tokenizer = _tokenizer(kind)
    model, processor = _BUILDERS[kind](kind, tokenizer)
    ids = processor.tokenizer.get_vocab()
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
