"""Helpers that run the bundled toy model: ablation tables, attention under CLVA, method comparison, and captures
nested inside an outer intervention (one per batch). Kept to a handful of items."""

import pytest
import torch

import clva_lite
from clva_lite.analysis.grounding import object_patch_masks
from clva_lite.attention.clva import CLVAConfig
from clva_lite.attention.function import _STATES
from clva_lite.eval.ablation import anchoring_effect, attention_with, caption_table, pope_table
from clva_lite.eval.comparison import evaluate_methods, pope_deltas
from clva_lite.eval.items import caption_items, question_items
from clva_lite.eval.methods import clva_method, vanilla
from clva_lite.toy import generate_scene, pope_questions

BANDS = CLVAConfig().layers(16)  # the toy decoder has 16 layers: early [0, 1], intermediate [4-7], deep [10-15]


@pytest.fixture(scope="module")
def items():
    items = question_items(pope_questions("calibration", 3, "adversarial"))
    assert len(items) >= 4
    return items


@pytest.fixture(scope="module")
def prompts(items):
    return [item.image() for item in items], [item.question for item in items]


@pytest.fixture(scope="module")
def heads(toy, prompts):
    return clva_lite.calibrate_heads(toy, *prompts, split="calibration")


def test_bands_are_what_the_assertions_below_assume():
    assert BANDS == {"early": [0, 1], "intermediate": [4, 5, 6, 7], "deep": [10, 11, 12, 13, 14, 15]}


def test_pope_table_at_zero_weights_matches_the_stock_model(toy, heads, items):
    table = pope_table(toy, [vanilla(), clva_method(CLVAConfig(alpha=0, beta=0), heads)], items)
    assert list(table.index) == ["vanilla", "CLVA"]
    assert list(table.columns) == ["accuracy", "precision", "recall", "f1", "yes_ratio", "fp", "n"]
    assert table.loc["vanilla"].tolist() == table.loc["CLVA"].tolist()
    assert table.loc["vanilla", "n"] == len(items)
    assert 0 <= table.loc["vanilla", "fp"] <= sum(item.meta["label"] == "no" for item in items)
    assert table.loc["vanilla", "yes_ratio"] * len(items) == pytest.approx(
        table.loc["vanilla", "fp"] + table.loc["vanilla", "recall"] * sum(i.meta["label"] == "yes" for i in items))


def test_caption_table_at_zero_weights_matches_the_stock_model(toy, heads):
    captions = caption_items("calibration", 2)
    table = caption_table(toy, [vanilla(), clva_method(CLVAConfig(alpha=0, beta=0), heads, name="zero")], captions,
                          max_new_tokens=10)
    assert list(table.index) == ["vanilla", "zero"]
    assert list(table.columns) == ["chair_s", "chair_i", "recall", "mean_length", "n"]
    assert table.loc["vanilla"].tolist() == table.loc["zero"].tolist()
    assert table.loc["vanilla", "n"] == 2 and table.loc["vanilla", "mean_length"] > 0


def test_tables_refuse_empty_items(toy):
    with pytest.raises(ValueError, match="no items"):
        pope_table(toy, [vanilla()], [])
    with pytest.raises(ValueError, match="no items"):
        caption_table(toy, [vanilla()], [])
    with pytest.raises(ValueError, match="no items"):
        evaluate_methods(toy, [vanilla()], [], max_new_tokens=2)


def test_attention_under_clva_differs_in_deep_layers_only(toy, heads, prompts):
    stock = attention_with(toy, *prompts)
    steered = attention_with(toy, *prompts, CLVAConfig(alpha=3.0, beta=3.0), heads, batch_size=4)
    assert stock.shape == steered.shape == (len(prompts[1]), 16, 8, 144)
    before = [layer for layer in range(16) if layer not in BANDS["deep"]]
    assert torch.allclose(stock[:, before], steered[:, before], atol=1e-5)
    for layer in BANDS["deep"]:
        assert (stock[:, layer] - steered[:, layer]).abs().max() > 1e-3
    again = attention_with(toy, *prompts, CLVAConfig(alpha=0, beta=0), heads)
    assert torch.allclose(stock, again, atol=1e-5)
    assert not _STATES


def test_anchoring_effect_rows(toy, heads, prompts, items):
    masks = object_patch_masks([generate_scene(i.meta["split"], i.meta["scene_index"]) for i in items])
    configs = {"stock": None, "zero": CLVAConfig(alpha=0, beta=0), "A+": CLVAConfig(alpha=4.0, beta=0),
               "A-": CLVAConfig(alpha=0, beta=4.0)}
    table = anchoring_effect(toy, *prompts, configs, heads, BANDS, masks)
    assert list(table.index) == list(configs)
    assert list(table.columns) == ["deep r with A+", "deep r with A-", "deep on-object share"]
    assert table.loc["zero"].tolist() == pytest.approx(table.loc["stock"].tolist(), abs=1e-5)
    assert table.loc["A+", "deep r with A+"] > table.loc["stock", "deep r with A+"]
    assert table.loc["A-", "deep r with A-"] < table.loc["stock", "deep r with A-"]
    assert table["deep on-object share"].between(0, 1).all()
    without_masks = anchoring_effect(toy, *prompts, {"stock": None}, heads, BANDS)
    assert list(without_masks.columns) == ["deep r with A+", "deep r with A-"]
    assert without_masks.loc["stock", "deep r with A+"] == pytest.approx(table.loc["stock", "deep r with A+"])


def test_evaluate_methods_and_a_zero_delta(toy, heads, items):
    methods = [vanilla(), clva_method(CLVAConfig(alpha=0, beta=0), heads)]
    records = evaluate_methods(toy, methods, items[:4], max_new_tokens=3)
    assert list(records) == ["vanilla", "CLVA"]
    assert [r["id"] for r in records["CLVA"]] == [i.item_id for i in items[:4]]
    assert [r["response"] for r in records["CLVA"]] == [r["response"] for r in records["vanilla"]]
    delta = pope_deltas(records, metric="f1").iloc[0]
    assert (delta["method"], delta["value"], delta["low"], delta["high"]) == ("CLVA", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="unique"):
        evaluate_methods(toy, [vanilla(), vanilla()], items[:1], max_new_tokens=1)


# --- captures nested inside an outer CLVA block ----------------------------------------------------------------------


def _inputs(loaded, start, n):
    return loaded.inputs([generate_scene("test", i).image() for i in range(start, start + n)],
                         ["is there a star"] * n)


def test_nested_captures_take_new_inputs_per_batch(toy, heads):
    first, second = _inputs(toy, 0, 1), _inputs(toy, 1, 2)
    config = toy.model.config.text_config
    with clva_lite.clva(toy, CLVAConfig(alpha=2.0, beta=1.0), heads=heads):
        with clva_lite.capture(toy, first) as record_a:
            toy.model(**first)
        with clva_lite.capture(toy, second) as record_b:  # other inputs: allowed once the first capture is closed
            toy.model(**second)
        with clva_lite.capture(toy, first) as record_c, clva_lite.capture(toy, first) as record_d:  # same inputs
            toy.model(**first)
        assert config._attn_implementation == "clva_lite"
    assert record_a.visual.shape == (1, 1, 16, 8, 144) and record_b.visual.shape == (1, 2, 16, 8, 144)
    assert torch.allclose(record_c.visual, record_a.visual) and torch.allclose(record_d.visual, record_a.visual)
    with clva_lite.capture(toy, second) as alone:
        toy.model(**second)
    assert not torch.allclose(alone.visual[0][:, 5:], record_b.visual[0][:, 5:])  # CLVA was on inside the block
    assert torch.allclose(alone.visual[0][:, :5], record_b.visual[0][:, :5], atol=1e-5)
    assert not _STATES and config._attn_implementation == "sdpa"


def test_two_captures_pinned_to_different_inputs_still_raise(toy, heads):
    first, second = _inputs(toy, 0, 1), _inputs(toy, 1, 2)
    config = toy.model.config.text_config
    with pytest.raises(ValueError, match="already attached .* other inputs"):
        with clva_lite.clva(toy, CLVAConfig(), heads=heads), clva_lite.capture(toy, first):
            with clva_lite.capture(toy, second):
                pass
    with pytest.raises(ValueError, match="already attached .* other inputs"):
        with clva_lite.capture(toy, first), clva_lite.capture(toy, second):
            pass
    assert not _STATES and config._attn_implementation == "sdpa"


def test_the_original_attention_implementation_comes_back(toy, heads):
    model, config = toy.model, toy.model.config.text_config
    inputs = _inputs(toy, 0, 1)
    model.set_attn_implementation("eager")
    try:
        with clva_lite.clva(toy, CLVAConfig(), heads=heads):
            with clva_lite.capture(toy, inputs):
                model(**inputs)
            with clva_lite.capture(toy, _inputs(toy, 2, 3)):
                assert config._attn_implementation == "clva_lite"
        assert config._attn_implementation == "eager"
        assert model.config.vision_config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
    assert config._attn_implementation == "sdpa" and not _STATES
