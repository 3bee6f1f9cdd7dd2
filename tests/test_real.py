import math

import pytest
import torch

import clva_lite
from clva_lite.eval.overhead import LLAVA_15_7B
from clva_lite.models import real
from clva_lite.models.families import FAMILIES
from clva_lite.models.tiny import TINY_KINDS, build_tiny_model


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_parameter_count_matches_the_instantiated_model(kind):
    model, _ = build_tiny_model(kind)
    assert real.parameter_count(model.config) == sum(p.numel() for p in model.parameters())
    assert sum(real.parameter_breakdown(model.config).values()) == real.parameter_count(model.config)


def test_parameter_count_counts_tied_weights_once(untrained):
    assert untrained.model.config.tie_word_embeddings
    assert real.parameter_count(untrained.model.config) == sum(p.numel() for p in untrained.model.parameters())


def test_config_dict_builds_on_meta_without_memory():
    model = real.meta_model(LLAVA_15_7B)
    assert all(p.device.type == "meta" for p in model.parameters())
    facts = real.describe_config(LLAVA_15_7B)
    assert (facts["decoder_layers"], facts["attention_heads"], facts["visual_tokens_per_image"]) == (32, 32, 576)


def test_memory_estimate_arithmetic():
    model, _ = build_tiny_model("llava-llama")
    estimate = real.memory_estimate(model.config)
    n = estimate["parameters"]
    assert n == sum(p.numel() for p in model.parameters())
    assert estimate["weights_fp32"] == 4 * n
    assert estimate["weights_fp16"] == estimate["weights_bf16"] == 2 * n
    head = model.get_output_embeddings()
    linear = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert estimate["parameters_quantized_in_4bit"] == sum(linear)
    packed = sum(math.ceil(k / 2) + 4 * math.ceil(k / real.BNB_4BIT_BLOCK) for k in linear)
    assert estimate["weights_4bit"] == packed + 2 * (n - sum(linear))
    assert estimate["weights_4bit"] < estimate["weights_fp16"]
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert estimate["kv_cache_per_token"] == 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 2


def test_weights_bytes_follow_load_model_defaults():
    estimate = real.memory_estimate(LLAVA_15_7B)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert real.weights_bytes(estimate, cpu) == estimate["weights_fp32"]
    assert real.weights_bytes(estimate, cuda) == estimate["weights_fp16"]
    assert real.weights_bytes(estimate, cuda, quantization="4bit") == estimate["weights_4bit"]
    assert real.weights_bytes(estimate, cpu, dtype="bfloat16") == estimate["weights_bf16"]


def test_offline_falls_back_to_a_stand_in_and_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)  # CI's own reason would be given first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded, why = real.load_real_or_stand_in("llava-hf/llava-1.5-7b-hf", device="cpu", folder=tmp_path / "s")
    assert "HF_HUB_OFFLINE" in why and "stand-in" in why and "meaningless" in why
    assert type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert loaded.family == "llava" and "stand-in" in loaded.name
    answers = loaded.generate([clva_lite.toy.generate_scene("test", 0).image()], ["is there a star ?"],
                              max_new_tokens=2)
    assert len(answers) == 1


def test_ci_reason_is_given_when_ci_is_set(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "CI environment variable" in real.offline_reason()
    monkeypatch.delenv("CI")
    assert "HF_HUB_OFFLINE" in real.offline_reason()


@pytest.mark.parametrize("model_id,cls", [(f.hub_ids[-1], f.model_class) for f in FAMILIES.values()])
def test_stand_in_has_the_class_of_the_requested_model(monkeypatch, tmp_path, model_id, cls):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(real, "hub_reachable", lambda timeout=2.0, endpoint=None: False)
    loaded, why = real.load_real_or_stand_in(model_id, device="cpu", folder=tmp_path / "s")
    assert type(loaded.model).__name__ == cls
    assert "could not be reached" in why


def test_ci_means_stand_in(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(real, "hub_reachable", lambda *a, **k: pytest.fail("the hub must not be probed under CI"))
    _, why = real.load_real_or_stand_in("llava-hf/llava-1.5-7b-hf", device="cpu", folder=tmp_path / "s")
    assert "CI" in why


def test_hub_reachable_is_false_for_a_dead_endpoint():
    assert real.hub_reachable(timeout=1.0, endpoint="http://127.0.0.1:9") is False


def test_unsupported_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not supported.*LlavaNextForConditionalGeneration"):
        real.load_real_or_stand_in("llava-hf/LLaVA-NeXT-Video-7B-hf", device="cpu")
    with pytest.raises(ValueError, match="cannot tell which class"):
        real.load_real_or_stand_in("someone/unknown-model", device="cpu")
    with pytest.raises(ValueError, match="unknown stand-in kind"):
        real.load_real_or_stand_in("llava-hf/llava-1.5-7b-hf", stand_in="gpt2")


def test_local_folder_is_loaded_as_is(tiny_dirs):
    loaded, why = real.load_real_or_stand_in(str(tiny_dirs["qwen2-vl"]), device="cpu")
    assert loaded.family == "qwen2_vl" and "local folder" in why
