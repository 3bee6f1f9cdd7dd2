"""The toy LLaVA's architecture, tokenizer and processor: real Hugging Face classes at a geometry close to LLaVA-1.5.

* vision tower: ``CLIPVisionModel`` (96 x 96 images, 8 x 8 patches -> 144 visual tokens + CLS, CLS dropped),
  features read from the penultimate layer (``vision_feature_layer=-2``, as LLaVA-1.5);
* projector: LLaVA's two-layer MLP (GELU);
* decoder: Llama, 16 layers x 8 heads x 128 hidden (head_dim 16) by default;
* tokenizer: word level (``tokenizers`` library) over every word of the toy world's texts;
* prompt: ``"<image> question : {text}"`` with the question's object word last (``"is there a star"``), the answer
  generated right after it (see ``CHAT_TEMPLATE``);
* decoder attention starts from a *mimetic* initialisation (:func:`mimetic_init`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
from .world import CATEGORIES, COLOURS, IMAGE_SIZE, NUM_VISUAL_TOKENS, PATCH_SIZE, PLURALS

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
TEMPLATE_WORDS = (
    "a", "and", "is", "are", "there", "the", "in", "image", "of", "on", "left", "?", ".", ":",
    "question", "answer", "describe", "yes", "no",
)
EXTRA_WORDS = ("scene",)  # language pre-training writes scenes as text: "scene : a red star and ... ."
CAPTION_REQUEST = "describe the image ."
# No "answer :" suffix: the answer follows the question's last word, which names the object asked about. With an
# "... in the image ? answer :" template (the first toy's) the decoder must first carry the object word to the
# answer position, then match it against the image: a two-step circuit that sat at the yes/no marginal for 600 steps
# even with one object per scene (docs/toy-recipe-history.md). With the object word last, one attention hop from
# that word answers.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}question : {{ part['text'] }} {% endif %}"
    "{% endfor %}{% elif message['role'] == 'assistant' %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }} </s> {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
)

__all__ = ["CAPTION_REQUEST", "CHAT_TEMPLATE", "ModelConfig", "build_config", "build_processor", "build_tokenizer",
           "build_untrained_model", "mimetic_init", "vocabulary"]


@dataclass
class ModelConfig:
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 384
    vision_feature_layer: int = -2
    hidden: int = 128
    layers: int = 16
    heads: int = 8
    intermediate: int = 320
    # RoPE base. With head_dim 16 only a few frequency pairs turn slowly enough for a query to match a key 150
    # tokens away by content (an image is 144 tokens); a larger base slows every pair down
    rope_theta: float = 1e6


def vocabulary() -> list[str]:
    words = [*SPECIAL_TOKENS, *TEMPLATE_WORDS, *EXTRA_WORDS, *COLOURS, *CATEGORIES,
             *(PLURALS[c] for c in CATEGORIES)]
    words += [w for w in NUMBER_WORDS if w not in words]
    if len(set(words)) != len(words):
        raise AssertionError("duplicate word in the toy vocabulary")
    return words


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (default: the toy's :func:`vocabulary`)."""
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


def build_processor(image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE) -> LlavaProcessor:
    """The toy's processor: CLIP-style image processor (96 px, mean/std 0.5), the tokenizer, the chat template.
    Another ``image_size`` / ``patch_size`` serves a model of another geometry that takes the toy's questions
    (:func:`clva_lite.eval.overhead.random_weights_loaded`)."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,  # CLIP's CLS, dropped by "default"
        chat_template=CHAT_TEMPLATE)


def build_config(mc: ModelConfig | None = None) -> LlavaConfig:
    mc = mc or ModelConfig()
    words = vocabulary()
    vision = CLIPVisionConfig(
        hidden_size=mc.vision_hidden, intermediate_size=mc.vision_intermediate,
        num_hidden_layers=mc.vision_layers, num_attention_heads=mc.vision_heads, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE, projection_dim=mc.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(words), hidden_size=mc.hidden, intermediate_size=mc.intermediate,
        num_hidden_layers=mc.layers, num_attention_heads=mc.heads, num_key_value_heads=mc.heads,
        max_position_embeddings=512, rope_theta=mc.rope_theta, bos_token_id=words.index("<s>"),
        eos_token_id=words.index("</s>"), pad_token_id=words.index("<pad>"), tie_word_embeddings=True)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=words.index("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=mc.vision_feature_layer,
        image_seq_length=NUM_VISUAL_TOKENS, projector_hidden_act="gelu", tie_word_embeddings=True)


def build_untrained_model(seed: int = 0, mc: ModelConfig | None = None) -> LlavaForConditionalGeneration:
    """A randomly initialised toy LLaVA (the architecture the training script starts from)."""
    import torch

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(mc))
    words = vocabulary()
    model.generation_config.eos_token_id = words.index("</s>")
    model.generation_config.pad_token_id = words.index("<pad>")
    model.generation_config.bos_token_id = words.index("<s>")
    return model.eval()


def mimetic_init(model: LlavaForConditionalGeneration, std: float = 0.1, seed: int = 0,
                 slow_pairs: int = 0) -> None:
    """Give every decoder head ``W_K = W_Q`` (entries N(0, ``std``)), in place.

    With ``slow_pairs`` > 0 only the rows of the ``slow_pairs`` slowest RoPE frequency pairs of each head (Hugging
    Face pairs channel ``i`` with ``i + head_dim / 2``; pair ``i`` turns by ``theta ** (-2 i / head_dim)`` radians a
    token) are shared; the other rows of q and k get independent N(0, 0.02) entries. Rotary embeddings turn the fast
    pairs so far over 100+ tokens that a shared fast row adds noise, not a match, to distant keys.

    A token's query then matches keys of similar tokens from the start, as in the attention of pretrained
    transformers (mimetic initialisation, Trockman & Kolter 2023, "Mimetic Initialization of Self-Attention
    Layers"). It stands in for the LLM pre-training the toy cannot afford: with Hugging Face's default init
    (std 0.02, q and k independent) the 16-layer decoder stayed at the yes/no marginal on "is there a X" for 600
    steps; with this init the one-object version is learned in about 200 (docs/toy-recipe-history.md).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    half = head_dim // 2
    if not 0 <= slow_pairs <= half:
        raise ValueError(f"slow_pairs must be in 0..{half} (head_dim {head_dim}), not {slow_pairs}")
    shared = torch.ones(head_dim, dtype=torch.bool)
    if slow_pairs:
        shared[:] = False
        shared[half - slow_pairs:half] = shared[head_dim - slow_pairs:] = True
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            attention = layer.self_attn
            weight = torch.randn(attention.q_proj.weight.shape, generator=generator) * std
            if not slow_pairs:
                attention.q_proj.weight.copy_(weight)
                attention.k_proj.weight.copy_(weight)
                continue
            rows = shared.repeat(attention.q_proj.weight.shape[0] // head_dim)
            q = torch.randn(weight.shape, generator=generator) * 0.02
            k = torch.randn(weight.shape, generator=generator) * 0.02
            attention.q_proj.weight.copy_(torch.where(rows[:, None], weight, q))
            attention.k_proj.weight.copy_(torch.where(rows[:, None], weight, k))


def model_config_dict(mc: ModelConfig) -> dict:
    return asdict(mc)
