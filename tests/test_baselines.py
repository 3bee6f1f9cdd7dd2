import math
import warnings

import pytest
import torch

import clva_lite
from clva_lite.attention.function import _STATES
from clva_lite.attention.pai_vcd import (
    PAIConfig,
    PAIIntervention,
    VCDConfig,
    diffusion_noise,
    pai_guidance_combine,
    vcd_combine,
    without_image,
)
from clva_lite.attention.spans import VisualSpan
from clva_lite.eval.methods import Method, clva_method, pai_method, vanilla, vcd_method
from clva_lite.eval.overhead import benchmark, default_methods
from clva_lite.toy import generate_scene


def test_pai_bias_is_alpha_times_abs_logit_on_image_keys():
    iv = PAIIntervention(PAIConfig(alpha=0.2, start_layer=2), num_layers=4)
    assert not iv.acts_on(1) and iv.acts_on(2) and iv.acts_on(3)
    logits = torch.tensor([[[1.0, -2.0, 3.0, 0.5, -1.0]]])  # (batch 1, head 1, kv 5); visual keys 1..3
    span = VisualSpan(torch.tensor([[1, 2, 3]]), torch.zeros(1, 5, dtype=torch.bool),
                      torch.zeros(1, 5, dtype=torch.bool), None)
    bias = iv.bias(2, logits, span)
    assert torch.allclose(bias, torch.tensor([[[0.4, 0.6, 0.1]]]))
    # the biased logits are z + 0.2 |z|: -2 -> -1.6, 3 -> 3.6, 0.5 -> 0.6
    assert torch.allclose(logits[0, 0, 1:4] + bias[0, 0], torch.tensor([-1.6, 3.6, 0.6]))


def test_pai_guidance_matches_its_formula():
    scores = torch.tensor([[2.0, 1.0, -3.0]])
    unconditional = torch.tensor([[0.0, 1.5, 0.0]])
    out = pai_guidance_combine(1.1)(scores, unconditional)
    s, u = torch.log_softmax(scores, -1), torch.log_softmax(unconditional, -1)
    expected = 1.1 * (s - u) + u
    assert torch.allclose(out[0, :2], expected[0, :2])
    assert out[0, 2] == float("-inf")  # p(token 2) < 0.1 * max p: cut off
    assert math.exp(s[0, 1] - s[0, 0]) >= 0.1


def test_vcd_matches_its_formula():
    logits = torch.tensor([[3.0, 2.5, 0.0]])
    contrast = torch.tensor([[1.0, 3.0, 0.0]])
    out = vcd_combine(alpha=1.0, beta=0.1)(logits, contrast)
    assert torch.allclose(out[0, :2], torch.tensor([2 * 3.0 - 1.0, 2 * 2.5 - 3.0]))
    assert out[0, 2] == float("-inf")  # 0.0 < log(0.1) + 3


def test_diffusion_noise_keeps_shape_and_is_deterministic():
    x = torch.ones(1, 3, 8, 8)
    a, b = diffusion_noise(x, 500, seed=0), diffusion_noise(x, 500, seed=0)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.allclose(a, x)
    assert torch.allclose(diffusion_noise(x, 0), x, atol=0.05)  # step 0 barely changes the image


def test_without_image_drops_image_tokens_and_repads(untrained):
    inputs = untrained.inputs([generate_scene("test", 0).image()] * 2,
                              ["is the star on the left of the moon", "describe the image ."])
    pad = untrained.processor.tokenizer.pad_token_id
    plain = without_image(inputs, untrained.image_token_id, pad)
    assert not bool((plain["input_ids"] == untrained.image_token_id).any())
    assert plain["input_ids"].shape[1] == int(inputs["attention_mask"][0].sum()) - 144
    assert plain["attention_mask"][1, 0] == 0 and plain["input_ids"][1, 0] == pad


@pytest.mark.parametrize("config,message", [
    (lambda: PAIConfig(alpha=-0.1), "alpha"), (lambda: PAIConfig(guidance=0.5), "guidance"),
    (lambda: VCDConfig(beta=0.0), "beta"), (lambda: VCDConfig(noise_step=1000), "noise_step"),
])
def test_bad_baseline_configs_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        config()


@pytest.mark.parametrize("method", [vanilla(), pai_method(), vcd_method(),
                                    clva_method(clva_lite.CLVAConfig(head_source="per-input"))],
                         ids=lambda m: m.name)
def test_every_method_generates_on_a_left_padded_batch(untrained, method):
    inputs = untrained.inputs([generate_scene("test", i).image() for i in range(3)],
                              ["is there a star", "describe the image .", "is the cross green"])
    out = method.generate(untrained, inputs, max_new_tokens=3, min_new_tokens=3)
    assert out.shape == (3, inputs["input_ids"].shape[1] + 3)
    assert not _STATES


def test_vcd_with_zero_alpha_is_greedy_vanilla(untrained):
    inputs = untrained.inputs([generate_scene("test", i).image() for i in range(2)],
                              ["is there a star", "describe the image ."])
    stock = vanilla().generate(untrained, inputs, max_new_tokens=4, min_new_tokens=4)
    contrast = Method("VCD a=0", "vcd", clva_lite.VCDConfig(alpha=0.0, beta=1e-9))
    assert torch.equal(contrast.generate(untrained, inputs, max_new_tokens=4, min_new_tokens=4), stock)


def test_contrast_pass_uses_no_deprecated_cache_argument(untrained):
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; the contrast pass follows whichever is current."""
    inputs = untrained.inputs([generate_scene("test", 0).image()], ["describe the image ."])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        vcd_method().generate(untrained, inputs, max_new_tokens=3, min_new_tokens=3)
        pai_method().generate(untrained, inputs, max_new_tokens=3, min_new_tokens=3)


def test_benchmark_reports_ratios_for_every_method(untrained):
    inputs = untrained.inputs([generate_scene("test", 0).image()], ["describe the image ."])
    results = benchmark(untrained, inputs, default_methods(untrained), new_tokens=2, repeats=1, warmup=0)
    assert set(results["methods"]) == {"stock SDPA", "capture", "CLVA", "PAI (with guidance)", "VCD"}
    assert results["methods"]["stock SDPA"]["time_ratio"] == 1.0
    assert all(r["time_ratio"] > 0 and r["memory_ratio"] > 0 for r in results["methods"].values())


def test_benchmark_times_calibrated_and_per_input_clva(untrained):
    from clva_lite.eval.overhead import benchmark_heads

    inputs = untrained.inputs([generate_scene("test", 0).image()], ["describe the image ."])
    heads = benchmark_heads(untrained, inputs)  # not the bundled toy: fitted on the benchmark prompt itself
    assert heads.source == "benchmark-prompt" and heads.focus is not None
    assert heads.visual_share.shape == (untrained.num_layers, untrained.num_heads)
    methods = default_methods(untrained, heads)
    assert list(methods) == ["capture", "CLVA", "CLVA (per-input heads)", "PAI (with guidance)", "VCD"]
    results = benchmark(untrained, inputs, {k: methods[k] for k in ("CLVA", "CLVA (per-input heads)")},
                        new_tokens=2, repeats=1, warmup=0)
    assert set(results["methods"]) == {"stock SDPA", "CLVA", "CLVA (per-input heads)"}


def test_benchmark_heads_of_the_bundled_toy_come_from_calibration():
    from clva_lite.eval.overhead import benchmark_heads

    toy = clva_lite.load_model("toy", device="cpu")
    heads = benchmark_heads(toy, None)
    assert heads.source == "calibration"
