"""The shared image prefix gives the full prompt's answers and logits, for every method, and falls back clearly."""

import warnings

import pytest
import torch

import clva_lite
from clva_lite.analysis.calibration import calibrate_heads
from clva_lite.attention.clva import CLVAConfig
from clva_lite.attention.function import _STATES
from clva_lite.eval.items import question_items, run_items
from clva_lite.eval.methods import clva_method, pai_method, vanilla, vcd_method
from clva_lite.eval.prefix import SHARED_PREFIX_FAMILIES, SharedPrefixes, exact_settings
from clva_lite.eval.sweep import choose_on_calibration
from clva_lite.models.families import FAMILIES
from clva_lite.toy import generate_scene
from clva_lite.toy.questions import pope_questions


@pytest.fixture(scope="module")
def toy_heads(toy):
    images = [generate_scene("calibration", i).image() for i in range(8)]
    return calibrate_heads(toy, images, ["is there a star in the image ?"] * 8, split="calibration")


def _methods(heads):
    return [vanilla(), clva_method(CLVAConfig(alpha=4.0, beta=2.0), heads, name="CLVA calibrated"),
            clva_method(CLVAConfig(alpha=4.0, beta=2.0, head_source="per-input", head_criterion="share_focus"),
                        name="CLVA per-input"),
            pai_method(), vcd_method()]


def _scores_both_ways(loaded, method, items, store, new_tokens=3):
    """Processed scores per step, (steps, batch, vocab), from the full prompt and from the shared prefix."""
    (batch,) = store.batches(items, len(items))
    shared = store.batch(batch)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "output_scores": True,
              "return_dict_in_generate": True}
    full_inputs = loaded.inputs([item.image() for item in batch], [item.question for item in batch])
    full = method.generate(loaded, full_inputs, **kwargs)
    cont = method.generate(loaded, shared.inputs, shared=shared, **kwargs)
    new_full = full.sequences[:, full_inputs["input_ids"].shape[1]:]
    new_cont = cont.sequences[:, shared.inputs["input_ids"].shape[1]:]
    return torch.stack(full.scores), torch.stack(cont.scores), new_full, new_cont


def _assert_same_scores(a, b, tolerance):
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    finite = torch.isfinite(a)
    assert float((a[finite] - b[finite]).abs().max()) <= tolerance


def test_toy_every_method_gives_the_full_prompts_tokens_and_logits(toy, toy_heads):
    items = question_items(pope_questions("calibration", 3, "adversarial"))[:12]
    store = SharedPrefixes(toy)
    store.encode(items, {f"toy:calibration:{i}": generate_scene("calibration", i).image() for i in range(3)})
    for method in _methods(toy_heads):
        full, cont, tokens_full, tokens_cont = _scores_both_ways(toy, method, items, store)
        assert torch.equal(tokens_full, tokens_cont), method.name
        _assert_same_scores(full, cont, 1e-4)
    assert not _STATES


def test_records_match_the_full_prompt_path_and_prefixes_are_computed_once(toy, toy_heads):
    """run_items over several scenes (mixed samplings, batches that split an image's questions) gives the same
    records both ways; a second method over the same store computes no prefix again."""
    items = question_items([q for s in ("random", "adversarial") for q in pope_questions("test", 3, s)])
    store = SharedPrefixes(toy)
    for method in _methods(toy_heads):
        full = run_items(toy, method, items, batch_size=16, max_new_tokens=3, shared_prefix=False)
        before = store.prefills
        shared = run_items(toy, method, items, batch_size=7, max_new_tokens=3, shared_prefix=store)
        assert [r["response"] for r in full] == [r["response"] for r in shared], method.name
        assert [r["id"] for r in full] == [item.item_id for item in items] == [r["id"] for r in shared]
        if method.name in ("CLVA calibrated", "CLVA per-input", "PAI"):
            assert store.prefills == before  # the stock prefixes from the first method were reused
    assert len(store._caches) == 6  # 3 scenes, stock and VCD's noised image


def test_a_grid_reuses_the_prefixes_and_chooses_as_full_prompts_do(toy, toy_heads):
    items = question_items(pope_questions("calibration", 4, "adversarial"))
    heads = toy_heads
    store = SharedPrefixes(toy)
    kwargs = {"criteria": ("share",), "alphas": (0.0, 4.0), "betas": (0.0, 4.0)}
    shared = choose_on_calibration(toy, heads, items, shared_prefix=store, **kwargs)
    full = choose_on_calibration(toy, heads, items, shared_prefix=False, **kwargs)
    assert store.prefills == 1  # one batched pass for the 4 scenes, for all points of the grid
    assert (shared["values"] == full["values"]).all() and shared["best"] == full["best"]


@pytest.fixture(scope="module", params=sorted({f.tiny_kind for f in FAMILIES.values()}))
def family(request, tiny_dirs):
    return clva_lite.load_model(tiny_dirs[request.param], device="cpu")


def test_each_served_family_is_exact_or_falls_back_with_its_reason(family):
    items = question_items(pope_questions("test", 2, "random"))[:8]
    methods = [vanilla(), clva_method(CLVAConfig(alpha=4.0, beta=2.0, head_source="per-input"))]
    if FAMILIES[family.family].contrastive:
        methods.append(vcd_method())
    if family.family in SHARED_PREFIX_FAMILIES:
        store = SharedPrefixes(family)
        store.encode(items, {f"toy:test:{i}": generate_scene("test", i).image() for i in range(2)})
        for method in methods:
            for group in store.batches(items, len(items)):
                full, cont, tokens_full, tokens_cont = _scores_both_ways(family, method, group, store)
                assert torch.equal(tokens_full, tokens_cont), (family.family, method.name)
                _assert_same_scores(full, cont, 1e-4)
    else:
        with pytest.warns(UserWarning, match="shared image prefix off"):
            import clva_lite.eval.prefix as prefix

            prefix._SAID.clear()
            records = run_items(family, vanilla(), items, batch_size=8, max_new_tokens=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once, not at every call
            again = run_items(family, vanilla(), items, batch_size=8, max_new_tokens=2)
        assert [r["response"] for r in records] == [r["response"] for r in again]
    assert not _STATES


def test_settings_that_need_the_full_prompt_are_named():
    assert exact_settings({"max_new_tokens": 3}) is None
    assert "beam" in exact_settings({"num_beams": 4})
    assert "several sequences" in exact_settings({"num_return_sequences": 2})


def test_a_prompt_without_a_question_or_no_question_at_all_is_a_clear_error(toy):
    with pytest.raises(ValueError, match="no questions given"):
        toy.inputs([], [])


@pytest.mark.parametrize("config, message", [
    ({"deep": (0.5, 1.5)}, "deep band .* 0 <= start < end <= 1"),
    ({"early": (0.2, 0.1)}, "early band"),
    ({"intermediate": []}, "at least one"),
    ({"deep": "late"}, "depth fractions or a range"),
    ({"alpha": True}, "alpha=True"),
    ({"beta": False}, "beta=False"),
])
def test_configs_that_no_model_could_run_are_refused_when_made(config, message):
    with pytest.raises(ValueError, match=message):
        CLVAConfig(**config)


def test_throughput_benchmark_times_three_ways_and_checks_they_agree(untrained, tmp_path):
    from clva_lite.__main__ import main

    main(["throughput", "--model", "toy-untrained", "--scenes", "2", "--device", "cpu", "--out",
          str(tmp_path / "t.json")])
    import json

    result = json.loads((tmp_path / "t.json").read_text())
    assert result["questions"] == result["loop_questions"] > 0
    assert result["same_answers_as_loop"] == 1.0 and result["same_answers_as_full_prompts"] == 1.0
    rate = result["questions_per_second"]
    assert result["evaluator_vs_batch1_loop"] == pytest.approx(rate["evaluator"] / rate["batch1_loop"])
    assert result["prefix_passes"] >= 1


def test_the_throughput_command_runs_a_random_weights_model_of_a_real_shape(tmp_path):
    """LLaVA-1.5's geometry (336 px, 14 px patches: 576 visual tokens) at a tiny width, asked the toy's questions."""
    import json

    from clva_lite.__main__ import main
    from clva_lite.eval.overhead import random_weights_loaded
    from clva_lite.toy import existence_question, generate_scene
    from clva_lite.toy.world import active_world

    loaded = random_weights_loaded("llava-tiny-576", device="cpu")
    inputs = loaded.inputs([generate_scene("test", 0).image()] * 2, [existence_question("star"), "is there a moon"])
    assert int((inputs["input_ids"][0] == loaded.image_token_id).sum()) == 576
    assert loaded.model.dtype == torch.float32 and loaded.toy_world is None and active_world() == "plain"
    main(["throughput", "--random-weights-from-config", "llava-tiny-576", "--scenes", "1", "--device", "cpu",
          "--out", str(tmp_path / "t.json")])
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["questions"] > 0 and result["same_answers_as_full_prompts"] == 1.0
    assert result["cuda_peak_mib"] is None  # measured on CUDA only
    with pytest.raises(ValueError, match="unknown shape 'llava-99b'"):
        random_weights_loaded("llava-99b", device="cpu")


def test_a_store_over_its_memory_bound_drops_old_prefixes_and_stays_exact(toy):
    """With room for about two images' prefixes, a batch about four images keeps its own and drops older ones."""
    items = question_items(pope_questions("test", 6, "adversarial"))
    one = SharedPrefixes(toy)
    run_items(toy, vanilla(), items[:6], max_new_tokens=3, shared_prefix=one)
    per_image = one._bytes
    store = SharedPrefixes(toy, max_bytes=2 * per_image)
    small = run_items(toy, vanilla(), items, batch_size=24, max_new_tokens=3, shared_prefix=store)
    full = run_items(toy, vanilla(), items, batch_size=24, max_new_tokens=3, shared_prefix=False)
    assert [r["response"] for r in small] == [r["response"] for r in full]
    assert store._bytes == 2 * per_image  # the last batch's two images; the first batch's four were dropped


def test_stopping_at_the_first_sentence_keeps_the_toys_answers(toy):
    """POPE reads the first sentence; the toy's answers are "yes ." / "no .", so stopping there changes no record."""
    items = question_items(pope_questions("test", 3, "adversarial"))
    stopped = run_items(toy, vanilla(), items, batch_size=32, max_new_tokens=3, stop_at_sentence_end=True)
    whole = run_items(toy, vanilla(), items, batch_size=32, max_new_tokens=3)
    assert [r["response"] for r in stopped] == [r["response"] for r in whole]
    assert {r["response"] for r in stopped} <= {"yes .", "no ."}


def test_attention_and_the_lens_read_from_shared_prefixes_equal_the_full_prompts(toy):
    from clva_lite.analysis.premise import attention_and_margins

    items = question_items(pope_questions("calibration", 4, "adversarial"))
    images = {i: generate_scene("calibration", i).image() for i in range(4)}
    pictures = [images[item.meta["scene_index"]] for item in items]
    questions = [item.question for item in items]
    store = SharedPrefixes(toy)
    shared = attention_and_margins(toy, pictures, questions, batch_size=5, shared_prefix=store)
    full = attention_and_margins(toy, pictures, questions, batch_size=5, shared_prefix=False)
    assert store.prefills >= 1 and len(store._caches) == len(images)  # one prefix per picture, not per question
    for a, b in zip(shared, full):
        assert a.shape == b.shape and a.shape[0] == len(questions)
        assert torch.allclose(a, b, atol=1e-4)
    # the rows come back in the questions' order, not in the batches' (grouped by image and length)
    one = attention_and_margins(toy, pictures[7:8], questions[7:8], shared_prefix=False)
    assert torch.allclose(one[2], full[2][7:8], atol=1e-4)
