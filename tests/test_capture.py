import pytest
import torch

import clva_lite
from clva_lite.attention.function import _STATES, ATTENTION_NAME
from clva_lite.toy import generate_scene

QUESTIONS = ["is there a star", "describe the image .", "is the star on the left of the moon",
             "are there two rings"]


def _inputs(loaded, n):
    images = [generate_scene("test", i).image() for i in range(n)]
    return loaded.inputs(images, QUESTIONS[:n])


def _eager_rows(model, inputs, steps):
    """Last-query attention rows of every step from stock eager attention: list of (B, L, H, kv)."""
    model.set_attn_implementation("eager")
    try:
        out = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                             output_attentions=True, return_dict_in_generate=True)
    finally:
        model.set_attn_implementation("sdpa")
    return [torch.stack([layer[:, :, -1, :] for layer in step], dim=1) for step in out.attentions]


@pytest.mark.parametrize("batch", [1, 4])
def test_capture_leaves_logits_and_generations_unchanged(any_model, batch):
    model, inputs = any_model.model, _inputs(any_model, batch)
    if batch == 4:
        assert bool((inputs["attention_mask"] == 0).any()), "the batch must be left-padded"
    reference = model(**inputs).logits
    stock_tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with clva_lite.capture(any_model, inputs) as record:
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert (logits - reference).abs().max() <= 1e-5
    assert torch.equal(tokens, stock_tokens)
    assert record.num_steps == 1 + 5  # the plain forward pass, then prefill + 4 decode steps


def test_recorded_rows_equal_eager_attention(any_model):
    model, inputs = any_model.model, _inputs(any_model, 4)
    steps = 4
    eager = _eager_rows(model, inputs, steps)
    with clva_lite.capture(any_model, inputs) as record:
        model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    positions = record.span.positions
    assert record.visual.shape[0] == steps
    for step in range(steps):
        rows = eager[step]
        index = positions[:, None, None, :].expand(-1, rows.shape[1], rows.shape[2], -1)
        expected = rows.gather(3, index)
        assert (record.visual[step] - expected).abs().max() <= 1e-5, f"step {step}"
        visual_share = record.shares[step][..., 1]
        assert torch.allclose(visual_share, expected.sum(-1), atol=1e-5)


def test_rows_are_distributions_over_groups(any_model):
    inputs = _inputs(any_model, 4)
    with clva_lite.capture(any_model, inputs) as record:
        any_model.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert bool((record.visual >= 0).all())
    assert torch.allclose(record.shares.sum(-1), torch.ones(record.shares.shape[:-1]), atol=1e-5)
    assert bool((record.shares[0][..., 3] == 0).all())  # at prefill nothing has been generated yet
    assert record.row(1).visual.shape == record.visual[:, 1].shape


def test_capture_is_removed_even_when_the_body_raises(any_model):
    inputs = _inputs(any_model, 1)
    config = any_model.model.config.text_config
    with pytest.raises(RuntimeError, match="boom"):
        with clva_lite.capture(any_model, inputs):
            assert config._attn_implementation == ATTENTION_NAME
            raise RuntimeError("boom")
    assert config._attn_implementation == "sdpa"
    assert not _STATES
    assert not any(m._forward_pre_hooks for m in any_model.model.modules())


def test_prompt_without_image_tokens_is_a_clear_error(untrained):
    inputs = untrained.processor.tokenizer(["question : is there a star"], return_tensors="pt")
    with pytest.raises(ValueError, match="contain no image tokens"):
        with clva_lite.capture(untrained, inputs):
            pass
    with pytest.raises(ValueError, match="no image tokens"):
        with clva_lite.capture(untrained):
            untrained.model(**inputs)
    assert not _STATES


def test_capture_only_requested_layers(untrained):
    inputs = _inputs(untrained, 2)
    with clva_lite.capture(untrained, inputs, layers=[1, 6]) as record:
        untrained.model(**inputs)
    assert record.visual.shape == (1, 2, 2, 8, 144)
    with pytest.raises(ValueError, match="outside"):
        with clva_lite.capture(untrained, inputs, layers=[16]):
            pass


def test_beam_search_expands_rows(untrained):
    inputs = _inputs(untrained, 2)
    with clva_lite.capture(untrained, inputs) as record:
        untrained.model.generate(**inputs, max_new_tokens=3, num_beams=2, do_sample=False)
    assert record.visual.shape[1] == 4  # 2 prompts x 2 beams
    assert torch.allclose(record.shares.sum(-1), torch.ones(record.shares.shape[:-1]), atol=1e-5)


def test_visual_grid(untrained):
    inputs = _inputs(untrained, 1)
    span = clva_lite.find_visual_span(untrained, inputs)
    assert span.grid == (12, 12) and span.num_visual == 144
    assert int(span.system.sum()) == 1  # <s>


def test_qwen2_vl_grid_survives_generate(tiny_dirs):
    # generate's prefill may not hand image_grid_thw to the forward by keyword; the grid of the caller's inputs stays.
    loaded = clva_lite.load_model(tiny_dirs["qwen2-vl"], device="cpu")
    inputs = loaded.inputs([generate_scene("calibration", 1).image()], ["is there a star"])
    with clva_lite.capture(loaded, inputs) as forward_rec:
        loaded.model(**inputs)
    with clva_lite.capture(loaded, inputs) as generate_rec:
        loaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert forward_rec.span.grid is not None
    assert generate_rec.span.grid == forward_rec.span.grid


def test_deferred_rows_survive_a_new_cache_inside_one_block(untrained):
    """Rows are computed from the final keys of each cache: a forward pass followed by a generate in one block
    (two caches) records both exactly, also on a layer subset and with store_device."""
    model, inputs = untrained.model, _inputs(untrained, 2)
    # the same prompts over other images: the same span, other keys (a deferred step must not read these)
    other = untrained.inputs([generate_scene("test", i).image() for i in (7, 8)], QUESTIONS[:2])
    assert torch.equal(other["input_ids"], inputs["input_ids"])
    eager_forward = _eager_rows(model, inputs, 1)[0]
    eager_generate = _eager_rows(model, other, 3)
    layers = [1, 4, 6]
    with clva_lite.capture(untrained, inputs, layers=layers, store_device="cpu") as record:
        model(**inputs)
        model.generate(**other, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert record.num_steps == 4
    positions = record.span.positions
    for step, rows in enumerate([eager_forward, *eager_generate]):
        rows = rows[:, layers]
        expected = rows.gather(3, positions[:, None, None, :].expand(-1, rows.shape[1], rows.shape[2], -1))
        assert (record.visual[step] - expected).abs().max() <= 1e-5, f"step {step}"
