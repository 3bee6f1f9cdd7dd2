import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from clva_lite.analysis.calibration import calibrate_heads
from clva_lite.eval.items import caption_items, question_items, run_items
from clva_lite.eval.methods import Method, vanilla
from clva_lite.eval.scoring import (
    paired_delta,
    score_chair,
    score_mme,
    score_pope,
    toy_vocabulary,
    with_chair_counts,
)
from clva_lite.eval.sweep import sweep_weights
from clva_lite.toy import mme_questions, pope_questions
from clva_lite.toy.train import tiny_training_config, train_toy_model


def test_records_are_saved_and_a_run_resumes(untrained, tmp_path):
    items = question_items(pope_questions("calibration", 6, "random"))
    path = tmp_path / "records.jsonl"
    first = run_items(untrained, vanilla(), items[:5], batch_size=4, max_new_tokens=2, records_path=path)
    assert len(path.read_text().splitlines()) == 5
    calls = []
    method = Method("spy", "vanilla")
    original = Method.generate

    def spy(self, loaded, inputs, **kwargs):
        calls.append(inputs["input_ids"].shape[0])
        return original(self, loaded, inputs, **kwargs)

    Method.generate = spy
    try:
        again = run_items(untrained, method, items, batch_size=4, max_new_tokens=2, records_path=path)
    finally:
        Method.generate = original
    assert sum(calls) == len(items) - 5  # only the new items were asked
    assert [r["id"] for r in again] == [i.item_id for i in items]
    assert again[:5] == first
    assert all(json.loads(line)["split"] == "calibration" for line in path.read_text().splitlines())


def test_malformed_records_file_names_the_line(untrained, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"records.jsonl:2"):
        run_items(untrained, vanilla(), question_items(pope_questions("calibration", 4, "random")),
                  records_path=path)


def _pope_record(qid, scene, kind, label, response):
    return {"id": qid, "scene_index": scene, "kind": kind, "label": label, "response": response}


def test_pope_scores_follow_the_official_rule_and_give_cis():
    records = [_pope_record(f"q{i}", i // 2, "random", label, response) for i, (label, response) in enumerate(
        [("yes", "Yes, there is."), ("no", "No."), ("yes", "no"), ("no", "There is not one."),
         ("yes", "yes ."), ("no", "yes .")])]
    scores = score_pope(records, metrics=("accuracy", "f1", "yes_ratio"))["random"]
    assert scores["n"] == 6
    assert scores["accuracy"]["value"] == pytest.approx(4 / 6)
    assert scores["yes_ratio"]["value"] == pytest.approx(3 / 6)
    assert scores["f1"]["value"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert scores["accuracy"]["low"] <= scores["accuracy"]["value"] <= scores["accuracy"]["high"]


def test_toy_chair_counts_hallucinated_mentions():
    records = [
        {"id": "a", "scene_index": 0, "response": "a red star and a blue moon .", "truth": ["star"]},
        {"id": "b", "scene_index": 1, "response": "a green circle .", "truth": ["circle", "ring"]},
        {"id": "c", "scene_index": 2, "response": "", "truth": ["bar"]},
    ]
    scores = score_chair(records)
    assert scores["chair_s"]["value"] == pytest.approx(1 / 3)
    assert scores["chair_i"]["value"] == pytest.approx(1 / 3)  # moon of 3 mentions
    assert scores["recall"]["value"] == pytest.approx(2 / 4)
    assert with_chair_counts(records, toy_vocabulary())[0]["chair_counts"]["hallucinated"] == 1


def test_paired_delta_of_a_method_against_itself_is_zero():
    records = [{"id": f"q{i}", "scene_index": i, "kind": "random", "label": "yes" if i % 2 else "no",
                "response": "yes" if i % 3 else "no"} for i in range(12)]
    delta = paired_delta(records, [dict(r) for r in records], "pope", "f1")
    assert delta == {"value": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}


def test_toy_mme_scores_from_records():
    questions = mme_questions("test", 6, "color")
    records = [{"id": q.question_id, "scene_index": q.scene_index, "kind": q.kind, "question": q.text,
                "label": q.label, "response": q.label} for q in questions]  # a perfect answerer
    scores = score_mme(records)
    assert scores["subtasks"]["color"]["score"] == pytest.approx(200.0)


def test_sweep_refuses_the_test_split(untrained):
    heads = calibrate_heads(untrained, [pope_questions("calibration", 4, "random")[0].scene.image()],
                            ["is there a star"], split="calibration")
    with pytest.raises(ValueError, match="test split"):
        sweep_weights(untrained, heads, question_items(pope_questions("test", 4, "random")), [0.0], [0.0])
    result = sweep_weights(untrained, heads, caption_items("calibration", 2), [0.0, 1.0], [0.0],
                           benchmark="chair", metric="chair_s", max_new_tokens=3)
    assert result["values"].shape == (2, 1) and result["split"] == "calibration"
    assert result["benchmark"] == "chair" and result["best"][1] == 0.0
    assert result["best"][0] == [0.0, 1.0][int(np.argmin(result["values"][:, 0]))]  # lowest CHAIR_s wins
    with pytest.raises(ValueError, match="unknown chair metric 'f1'"):
        sweep_weights(untrained, heads, caption_items("calibration", 2), [0.0], [0.0], benchmark="chair")
    with pytest.raises(ValueError, match="unknown benchmark 'mme'"):
        sweep_weights(untrained, heads, caption_items("calibration", 2), [0.0], [0.0], benchmark="mme")


def test_a_short_training_run_lowers_the_loss_of_every_stage():
    # 30 steps a stage on the tests' tiny data (notebook 07's short run): the log's first loss averages the first
    # 10 steps and its final loss the last 20, so fewer steps could not show a fall
    config = replace(tiny_training_config(), vision_steps=30, language_steps=30, align_steps=30, instruct_steps=30)
    _, log = train_toy_model(config)
    assert [s["stage"] for s in log] == ["vision", "language", "align", "instruct"]
    for stage in log:
        assert stage["final_loss"] < stage["first_loss"], stage


def test_training_is_deterministic_under_a_seed():
    config = tiny_training_config()
    first, _ = train_toy_model(config)
    second, _ = train_toy_model(config)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert np.isfinite([p.sum().item() for p in first.parameters()]).all()


def test_sharded_runs_merge_to_the_single_process_result(untrained, tmp_path):
    from clva_lite.eval.items import merge_records, shard

    items = question_items(pope_questions("calibration", 8, "adversarial"))
    single = run_items(untrained, vanilla(), items, batch_size=5, max_new_tokens=2)
    files = []
    for rank in range(2):
        path = tmp_path / f"rank{rank}.jsonl"
        run_items(untrained, vanilla(), shard(items, rank, 2), batch_size=5, max_new_tokens=2, records_path=path)
        files.append(path)
    assert sorted(i.item_id for r in range(2) for i in shard(items, r, 2)) == sorted(i.item_id for i in items)
    assert merge_records(items, files) == single
    with pytest.raises(ValueError, match="no record"):
        merge_records(items, files[:1])
    with pytest.raises(ValueError, match="more than one process"):
        merge_records(items, [files[0], files[0]])


def _mme_record(scene, kind, label, response):
    return {"id": f"{scene}-{kind}-{label}", "scene_index": scene, "kind": kind, "question": f"q {label}",
            "label": label, "response": response}


def test_mme_cis_resample_scenes_by_hand():
    # scene 0: both right; scene 1: one right -> acc 3/4, acc+ 1/2, score 125. A resample holds scene 0 twice
    # (score 200), scene 1 twice (score 50) or one of each (125), each with chance 1/4, 1/4, 1/2.
    records = [_mme_record(0, "color", "yes", "yes"), _mme_record(0, "color", "no", "no"),
               _mme_record(1, "color", "yes", "yes"), _mme_record(1, "color", "no", "yes")]
    scores = score_mme(records)
    assert scores["subtasks"]["color"]["acc"] == pytest.approx(0.75)
    ci = scores["ci"]["color"]
    assert ci["acc"]["value"] == pytest.approx(0.75) and ci["acc_plus"]["value"] == pytest.approx(0.5)
    assert (ci["score"]["value"], ci["score"]["low"], ci["score"]["high"]) == pytest.approx((125.0, 50.0, 200.0))
    assert scores["ci"]["total"]["value"] == pytest.approx(scores["total"])
    assert "ci" not in score_mme(records, ci=False)


def test_mme_ci_draws_a_scene_in_every_subtask_together():
    # scene 0 right in both subtasks, scene 1 wrong in both: each subtask scores 50 + 50, total 200; a resample
    # (rows of counts = scenes, all subtasks together) totals 0, 200 or 400
    records = [_mme_record(s, kind, label, label if s == 0 else "other") for s in (0, 1)
               for kind in ("existence", "count") for label in ("yes", "no")]
    scores = score_mme(records)
    from clva_lite.eval.scoring import mme_scene_counts

    scenes, counts = mme_scene_counts(records, ["existence", "count"])
    assert scenes == ["0", "1"] and counts.shape == (2, 2, 4)
    assert counts[0, 0].tolist() == [2, 2, 1, 1] and counts[1, 1].tolist() == [0, 2, 0, 1]
    total = scores["ci"]["total"]
    assert (total["value"], total["low"], total["high"]) == pytest.approx((200.0, 0.0, 400.0))


def test_items_read_images_from_files_with_clear_errors(tmp_path):
    from PIL import Image

    from clva_lite.eval.benchmarks import PopeQuestion
    from clva_lite.eval.items import Item, check_images, load_image, pope_file_items

    Image.new("L", (5, 4), 7).save(tmp_path / "a.png")
    item = Item("x", "is there a star ?", "test", {"image_path": str(tmp_path / "a.png"), "scene_index": "a.png"})
    image = item.image()
    assert image.mode == "RGB" and image.size == (5, 4) and image.getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*b\.png; check --image-dir"):
        load_image(tmp_path / "b.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.png"):
        load_image(tmp_path / "bad.png")
    questions = [PopeQuestion(k, name, "is there a star ?", "yes", "popular")
                 for k, name in enumerate(["a.png", "a.png", "b.png", "c.png"])]
    items = pope_file_items(questions, tmp_path, limit=2)
    assert [i.item_id for i in items] == ["pope-popular-0", "pope-popular-1", "pope-popular-2"]
    assert items[2].meta == {"split": "test", "scene_index": "b.png", "image_path": str(tmp_path / "b.png"),
                             "label": "yes", "kind": "popular", "question_id": 2}
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) not found, first: .*b\.png"):
        check_images(items)
    with pytest.raises(ValueError, match="question ids repeat"):
        pope_file_items(questions[:1] * 2, tmp_path)
    with pytest.raises(ValueError, match="limit=0"):
        pope_file_items(questions, tmp_path, limit=0)


def test_process_state_refuses_a_launch_it_cannot_see(monkeypatch, untrained):
    import accelerate

    from clva_lite.eval.items import process_state

    class OneProcess:  # what PartialState() reports under torchrun on a CPU machine without cpu=True
        def __init__(self, cpu=False):
            self.cpu, self.num_processes, self.distributed_type = cpu, 1, "NO"

    monkeypatch.setattr(accelerate, "PartialState", OneProcess)
    assert process_state(untrained).cpu is True  # the model is on the CPU, so gloo on CPU is asked for
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="started 2 processes .* accelerate sees 1"):
        process_state(untrained)


def test_rank_files_name_the_world_size(tmp_path):
    from clva_lite.eval.items import rank_files

    assert [p.name for p in rank_files(tmp_path, "pope-vanilla", 2)] == ["pope-vanilla.rank0of2.jsonl",
                                                                        "pope-vanilla.rank1of2.jsonl"]


def test_demo_chair_grid_is_on_calibration_captions_and_saved(untrained, tmp_path, monkeypatch):
    from clva_lite.eval import main_job as demo

    monkeypatch.setattr(demo, "CHAIR_CALIBRATION_SCENES", 2)
    monkeypatch.setattr(demo, "ALPHAS", (0.0, 1.0))
    monkeypatch.setattr(demo, "BETAS", (0.0,))
    heads = calibrate_heads(untrained, [pope_questions("calibration", 4, "random")[0].scene.image()],
                            ["is there a star"], split="calibration")
    sweep = demo.chair_grid(untrained, heads, tmp_path)
    assert sweep["values"].shape == (2, 1) and sweep["split"] == "calibration" and sweep["metric"] == "chair_s"
    assert (tmp_path / "alpha_beta_chair_s_calibration.png").stat().st_size > 1000


def test_demo_grid_table_marks_the_chosen_point():
    from clva_lite.eval.main_job import grid_table

    grid = {"alphas": [0.0, 1.0], "betas": [0.0, 2.0], "chosen": [1.0, 0.0],
            "pope_adversarial_f1": [[0.5, 0.25], [0.75, 0.125]], "chair_s": [[0.1, 0.2], [0.3, 0.4]]}
    lines = grid_table(grid)
    assert lines[0] == "| alpha \\ beta | 0 | 2 |"
    assert lines[3] == "| 1 | F1 0.750, CHAIR_s 0.300 (chosen) | F1 0.125, CHAIR_s 0.400 |"
    assert sum("(chosen)" in line for line in lines) == 1


def test_toy_calibration_choice_is_cached_per_weights_file(untrained, tmp_path, monkeypatch):
    import os

    import clva_lite
    from clva_lite.eval import sweep

    folder = tmp_path / "model"
    untrained.model.save_pretrained(folder)
    untrained.processor.save_pretrained(folder)
    loaded = clva_lite.load_model(str(folder), device="cpu")
    monkeypatch.setenv("CLVA_LITE_CACHE", str(tmp_path / "cache"))
    args = dict(head_prompts=4, scenes=8, alphas=(0.0, 1.0), betas=(0.0,))
    first = sweep.toy_calibration_choice(loaded, **args)
    assert len(list((tmp_path / "cache").glob("calibration-choice-*.pt"))) == 1

    def fail(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(sweep, "choose_on_calibration", fail)
    again = sweep.toy_calibration_choice(loaded, **args)  # from the cache
    assert again["best"] == first["best"] and np.array_equal(again["values"], first["values"])
    with pytest.raises(AssertionError, match="computed again"):  # other arguments: not cached
        sweep.toy_calibration_choice(loaded, **{**args, "scenes": 9})
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    with pytest.raises(AssertionError, match="computed again"):
        sweep.toy_calibration_choice(loaded, **args)
