"""The toy LLaVA's architecture, tokenizer and processor: real Hugging Face classes at toy scale.

* vision tower: ``CLIPVisionModel`` (64x64 images, 8x8 patches -> 64 visual tokens + CLS, CLS dropped);
* projector: LLaVA's two-layer MLP;
* decoder: ``LlamaForCausalLM``-style model, 8 layers x 4 heads, hidden size 128;
* tokenizer: word level (``tokenizers`` library), every word of the toy world's templates;
* prompt: the processor's chat template renders ``"<image> question : {text} answer :"``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .questions import NUMBER_WORDS
from .world import CATEGORIES, COLOURS, IMAGE_SIZE, PLURALS

PATCH_SIZE = 8
GRID = IMAGE_SIZE // PATCH_SIZE
NUM_VISUAL_TOKENS = GRID * GRID
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<bg>")
TEMPLATE_WORDS = (
    "a", "and", "is", "are", "there", "the", "in", "image", "of", "on", "left", "?", ".", ":",
    "question", "answer", "describe", "yes", "no",
)
CAPTION_REQUEST = "describe the image ."
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}question : {{ part['text'] }} {% endif %}"
    "{% endfor %}{% elif message['role'] == 'assistant' %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }} </s> {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}answer :{% endif %}"
)


def vocabulary() -> list[str]:
    """All tokens, special tokens first, in a fixed order."""
    words = [*SPECIAL_TOKENS, *TEMPLATE_WORDS, *COLOURS, *CATEGORIES, *(PLURALS[c] for c in CATEGORIES)]
    words += [w for w in NUMBER_WORDS if w not in words]
    if len(set(words)) != len(words):
        raise AssertionError("duplicate word in the toy vocabulary")
    return words


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (default: this toy's :func:`vocabulary`)."""
    vocab = {word: i for i, word in enumerate(words or vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_processor() -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int | None = None) -> LlavaConfig:
    words = vocabulary()
    vocab_size = vocab_size or len(words)
    vision = CLIPVisionConfig(
        hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=words.index("<s>"), eos_token_id=words.index("</s>"), pad_token_id=words.index("<pad>"),
        tie_word_embeddings=True,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=words.index("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1, image_seq_length=NUM_VISUAL_TOKENS,
        tie_word_embeddings=True,
    )


def build_untrained_model(seed: int = 0) -> LlavaForConditionalGeneration:
    """A randomly initialised toy LLaVA (the architecture the training script starts from)."""
    import torch

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config())
    words = vocabulary()
    model.generation_config.eos_token_id = words.index("</s>")
    model.generation_config.pad_token_id = words.index("<pad>")
    model.generation_config.bos_token_id = words.index("<s>")
    return model.eval()
