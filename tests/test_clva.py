import pytest
import torch

import clva_lite
from clva_lite.analysis.calibration import calibrate_heads
from clva_lite.attention.clva import CLVAConfig, CLVAIntervention, clva
from clva_lite.attention.function import _STATES
from clva_lite.attention.heads import HeadClasses
from clva_lite.toy import generate_scene

QUESTIONS = ["is there a star", "describe the image .", "is the star on the left of the moon",
             "is there a ring"]


@pytest.fixture(scope="module")
def heads(untrained):
    images = [generate_scene("calibration", i).image() for i in range(8)]
    return calibrate_heads(untrained, images, ["is there a star"] * 8, split="calibration")


def _inputs(loaded, n):
    return loaded.inputs([generate_scene("test", i).image() for i in range(n)], QUESTIONS[:n])


@pytest.mark.parametrize("batch", [1, 4])
def test_zero_weights_reproduce_the_stock_model(untrained, heads, batch):
    model, inputs = untrained.model, _inputs(untrained, batch)
    reference = model(**inputs).logits
    stock_tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with clva(untrained, CLVAConfig(alpha=0.0, beta=0.0), heads=heads):
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert (logits - reference).abs().max() <= 1e-5
    assert torch.equal(tokens, stock_tokens)


def test_zero_weights_reproduce_stock_on_every_architecture(any_model):
    model = any_model.model
    inputs = any_model.inputs([generate_scene("test", i).image() for i in range(4)], QUESTIONS)
    reference = model(**inputs).logits
    with clva(any_model, CLVAConfig(alpha=0.0, beta=0.0, head_source="per-input")):
        logits = model(**inputs).logits
    assert (logits - reference).abs().max() <= 1e-5


def _deep_mass(untrained, heads, config, patch_of):
    inputs = _inputs(untrained, 4)
    with clva(untrained, config, heads=heads) as intervention, clva_lite.capture(untrained, inputs) as record:
        untrained.model(**inputs)
    deep = record.visual[0][:, 5:]  # (batch, deep layers, heads, V)
    patch = patch_of(intervention)
    return float(deep.gather(3, patch[:, None, None, None].expand(-1, deep.shape[1], deep.shape[2], 1)).mean())


def test_alpha_raises_and_beta_lowers_deep_attention_on_the_anchor_patches(untrained, heads):
    with clva(untrained, CLVAConfig(alpha=1.0, beta=1.0), heads=heads) as intervention:
        untrained.model(**_inputs(untrained, 4))
    top_positive = intervention.positive_anchor.argmax(-1)
    top_negative = intervention.negative_anchor.argmax(-1)
    positive = [_deep_mass(untrained, heads, CLVAConfig(alpha=a, beta=0.0), lambda _: top_positive)
                for a in (0.0, 1.0, 3.0)]
    negative = [_deep_mass(untrained, heads, CLVAConfig(alpha=0.0, beta=b), lambda _: top_negative)
                for b in (0.0, 1.0, 3.0)]
    assert positive[0] < positive[1] < positive[2]
    assert negative[0] > negative[1] > negative[2]


@pytest.mark.parametrize("batch", [1, 4])
def test_anchors_are_the_mean_visual_distribution_of_the_anchor_heads(untrained, heads, batch):
    """The anchors CLVA computes from its anchor heads' keys equal those read from a capture of the same pass."""
    inputs = _inputs(untrained, batch)
    with clva(untrained, CLVAConfig(alpha=1.0, beta=1.0), heads=heads) as iv, \
            clva_lite.capture(untrained, inputs) as record:
        untrained.model(**inputs)
    visual = record.visual[0]  # (batch, layers, heads, V): the last query's attention on the image, stock bands
    distribution = visual / visual.sum(-1, keepdim=True)
    for anchor, mask in ((iv.positive_anchor, iv.positive_heads), (iv.negative_anchor, iv.negative_heads)):
        expected = distribution[:, mask].mean(1)  # (batch, V): the mean over the band's anchor heads
        assert anchor.shape == expected.shape
        assert torch.allclose(anchor, expected, atol=1e-5)


def test_bias_matches_the_formula_on_a_hand_computed_case():
    share = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]])  # 4 layers x 2 heads
    heads = HeadClasses(share, fraction=0.5)
    config = CLVAConfig(alpha=2.0, beta=1.0, early=[0], intermediate=[1, 2], deep=[3])
    iv = CLVAIntervention(config, num_layers=4, num_heads=2, heads=heads)
    # intermediate layers 1-2 (4 heads): top half by share -> (2, 1) 0.8 and (1, 0)/(1, 1) tie at 0.5
    assert iv.positive_heads[2, 1] and iv.negative_heads[0, 1] and not iv.negative_heads[0, 0]
    iv.begin_step(0)
    early = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.02, 0.02, 0.04, 0.02]]])  # (batch 1, heads 2, V 4)
    from clva_lite.attention.function import QueryRow
    from clva_lite.attention.spans import VisualSpan

    span = VisualSpan(torch.arange(4).unsqueeze(0), torch.zeros(1, 5, dtype=torch.bool),
                      torch.zeros(1, 5, dtype=torch.bool), (2, 2))
    # the function hands over rows; one whose logits are log p has softmax p over the visual keys
    row = lambda v: QueryRow(None, None, 1.0, 1, None, None, (v / v.sum(-1, keepdim=True)).log())  # noqa: E731
    iv.observe_visual(0, row(early), span)
    mid_1 = torch.tensor([[[0.1, 0.2, 0.1, 0.1], [0.1, 0.1, 0.1, 0.2]]])
    mid_2 = torch.tensor([[[0.2, 0.2, 0.2, 0.2], [0.4, 0.2, 0.1, 0.1]]])
    iv.observe_visual(1, row(mid_1), span)
    iv.observe_visual(2, row(mid_2), span)
    positive_heads = [(1, h, mid_1[0, h]) for h in range(2) if iv.positive_heads[1, h]]
    positive_heads += [(2, h, mid_2[0, h]) for h in range(2) if iv.positive_heads[2, h]]
    a_plus = torch.stack([row / row.sum() for _, _, row in positive_heads]).mean(0)
    a_minus = early[0, 1] / early[0, 1].sum()
    expected = 2.0 * a_plus / a_plus.max() - 1.0 * a_minus / a_minus.max()
    bias = iv.bias(3, None, span)
    assert bias.shape == (1, 1, 4)
    assert torch.allclose(bias[0, 0], expected, atol=1e-6)


def test_prob_mode_shifts_probabilities_and_renormalises(untrained, heads):
    inputs = _inputs(untrained, 2)
    config = CLVAConfig(alpha=0.5, beta=0.0, mode="prob")
    with clva(untrained, config, heads=heads) as iv, clva_lite.capture(untrained, inputs) as record:
        untrained.model(**inputs)
    assert torch.allclose(record.shares.sum(-1), torch.ones(record.shares.shape[:-1]), atol=1e-5)
    with clva_lite.capture(untrained, inputs) as stock:
        untrained.model(**inputs)
    deep_before, deep_after = stock.visual[0][:, -1], record.visual[0][:, -1]  # the last layer is deep
    share = deep_before.sum(-1, keepdim=True)
    expected = (deep_before + 0.5 * iv.positive_anchor[:, None, :] * share).clamp_min(0)
    expected = expected / (1 + 0.5 * share)  # renormalised: the visual part gained 0.5 * share of mass
    assert torch.allclose(deep_after, expected, atol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    ({"alpha": -1.0}, "out of range"),
    ({"beta": float("nan")}, "out of range"),
    ({"alpha": 100.0}, "out of range"),
    ({"mode": "softmax"}, "mode"),
    ({"apply_to": "some"}, "apply_to"),
    ({"head_fraction": 0.9}, "head_fraction"),
])
def test_bad_config_values_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CLVAConfig(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"early": (0.0, 0.4), "intermediate": (0.25, 0.5)}, "overlap"),
    ({"intermediate": (0.33, 0.34)}, "selects no layer"),
    ({"deep": range(12, 20)}, "outside"),
    ({"early": (0.7, 0.9), "deep": (0.5, 0.6)}, "deep band must come after"),
    ({"early": (0.5, 0.2)}, "depth fractions"),
])
def test_bad_bands_are_clear_errors(untrained, heads, kwargs, message):
    with pytest.raises(ValueError, match=message):
        with clva(untrained, CLVAConfig(**kwargs), heads=heads):
            pass
    assert not _STATES


def test_calibrated_mode_needs_head_classes(untrained):
    with pytest.raises(ValueError, match="needs head classes"):
        with clva(untrained, CLVAConfig()):
            pass
    with pytest.raises(ValueError, match="test split"):
        calibrate_heads(untrained, [generate_scene("test", 0).image()], ["x"], split="test")


def test_clva_is_removed_even_when_the_body_raises(untrained, heads):
    with pytest.raises(KeyError):
        with clva(untrained, CLVAConfig(), heads=heads):
            raise KeyError("boom")
    assert not _STATES and untrained.model.config.text_config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="already active"):
        with clva(untrained, CLVAConfig(), heads=heads), clva(untrained, CLVAConfig(), heads=heads):
            pass
    assert not _STATES
