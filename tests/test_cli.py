"""Per-benchmark runners (clva_lite.eval.runners) and the ``python -m clva_lite pope|chair|mme`` command line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clva_lite.__main__ import main
from clva_lite.attention.heads import HeadClasses
from clva_lite.eval.benchmarks import parse_pope_answer
from clva_lite.eval.items import question_items
from clva_lite.eval.methods import vanilla
from clva_lite.eval.runners import (
    build_method,
    fit_toy_heads,
    format_result,
    method_config,
    run_chair,
    run_mme,
    run_pope,
    toy_mme_items,
    toy_pope_items,
)
from clva_lite.eval.scoring import score_mme
from clva_lite.models.tiny import save_tiny_model
from clva_lite.toy import pope_questions

# ---------------------------------------------------------------- methods and fitting


def test_method_config_applies_weights_and_rejects_bad_ones():
    assert method_config("vanilla") is None
    config = method_config("clva", alpha=0.5, beta=2.0)
    assert (config.alpha, config.beta) == (0.5, 2.0)
    assert method_config("vcd", beta=0.5).beta == 0.5
    with pytest.raises(ValueError, match="unknown method 'beam'.*vanilla, clva, pai, vcd"):
        method_config("beam")
    with pytest.raises(ValueError, match="alpha=25.0 is out of range"):
        method_config("clva", alpha=25.0)
    with pytest.raises(ValueError, match="beta=-1.0 is out of range"):
        method_config("clva", beta=-1.0)
    with pytest.raises(ValueError, match="'vanilla' has no alpha; it takes no weights"):
        method_config("vanilla", alpha=1.0)
    with pytest.raises(ValueError, match="'pai' has no beta; it takes --alpha"):
        method_config("pai", beta=1.0)
    with pytest.raises(ValueError, match="CLVA needs head classes"):
        build_method("clva")


def test_fitting_on_the_test_split_is_refused(untrained):
    with pytest.raises(ValueError, match="calibration split, not 'test'"):
        fit_toy_heads(untrained, split="test")
    test_heads = HeadClasses(torch.rand(8, 4), source="test")
    with pytest.raises(ValueError, match="fitted on the 'test' split"):
        run_pope(untrained, build_method("clva", heads=test_heads), limit=1)


# ---------------------------------------------------------------- toy runners


def test_toy_items_follow_limit_and_samplings():
    items = toy_pope_items("test", 5, ["random", "adversarial"])
    expected = pope_questions("test", 5, "random") + pope_questions("test", 5, "adversarial")
    assert [i.item_id for i in items] == [q.question_id for q in expected]
    assert {i.meta["scene_index"] for i in items} <= set(range(5))
    assert {i.meta["kind"] for i in toy_mme_items("test", 3, ["color"])} == {"color"}
    with pytest.raises(ValueError, match="unknown POPE sampling"):
        toy_pope_items("test", 2, ["rare"])
    with pytest.raises(ValueError, match="limit=0 must be a positive number"):
        toy_pope_items("test", 0)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        toy_pope_items("dev", 2)


def test_run_pope_gives_records_scores_and_provenance(untrained, tmp_path):
    result = run_pope(untrained, vanilla(), split="calibration", limit=3, samplings=("random",),
                      records_dir=tmp_path, batch_size=8, max_new_tokens=2)
    items = question_items(pope_questions("calibration", 3, "random"))
    assert [r["id"] for r in result["records"]] == [i.item_id for i in items]
    assert result["evaluated_on"] == "calibration"
    assert result["fitted_on"] == {"head_classes": None}
    assert result["method"]["name"] == "vanilla" and result["n_items"] == len(items)
    # the score is the official rule applied to the records, by hand
    right = [parse_pope_answer(r["response"]) == r["label"] for r in result["records"]]
    accuracy = result["scores"]["random"]["accuracy"]
    assert accuracy["value"] == pytest.approx(np.mean(right))
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    path = tmp_path / "pope-vanilla.jsonl"
    assert result["records_file"] == str(path) and len(path.read_text().splitlines()) == len(items)
    again = run_pope(untrained, vanilla(), split="calibration", limit=3, samplings=("random",),
                     records_dir=tmp_path, batch_size=8, max_new_tokens=2)
    assert again["records"] == result["records"] and len(path.read_text().splitlines()) == len(items)
    with pytest.raises(ValueError, match="other settings"):  # records of other settings are never reused
        run_pope(untrained, vanilla(), split="calibration", limit=3, samplings=("random",), records_dir=tmp_path,
                 batch_size=8, max_new_tokens=3)
    assert f"| random | {len(items)} |" in format_result(result)


def test_run_chair_and_run_mme_on_two_scenes(untrained):
    chair = run_chair(untrained, vanilla(), split="test", limit=2, max_new_tokens=4)
    assert [r["id"] for r in chair["records"]] == ["test-0-caption", "test-1-caption"]
    assert chair["scores"]["n"] == 2 and 0 <= chair["scores"]["chair_s"]["value"] <= 1
    mme = run_mme(untrained, vanilla(), split="test", limit=2, subtasks=("existence", "color"), max_new_tokens=2)
    assert {r["kind"] for r in mme["records"]} == {"existence", "color"}
    assert mme["scores"]["subtasks"] == score_mme(mme["records"])["subtasks"]
    total = mme["scores"]["ci"]["total"]
    assert total["value"] == pytest.approx(mme["scores"]["total"]) and total["low"] <= total["value"] <= total["high"]
    assert "total (of 400)" in format_result(mme)


# ---------------------------------------------------------------- command line, toy


def test_cli_pope_writes_result_json(tmp_path, capsys):
    out = tmp_path / "run"
    result = main(["pope", "--model", "toy-untrained", "--method", "vanilla", "--limit", "2", "--samplings",
                   "random", "--max-new-tokens", "2", "--out", str(out)])
    assert result is None  # main prints; the result is on disk
    printed = capsys.readouterr().out
    assert "| random | " in printed and "evaluated on test" in printed
    saved = json.loads((out / "result.json").read_text())
    assert saved["evaluated_on"] == "test" and saved["benchmark"] == "pope" and "records" not in saved
    assert saved["scores"]["random"]["n"] == len((out / "records" / "pope-vanilla.jsonl").read_text().splitlines())


def test_cli_clva_fits_heads_on_calibration_and_records_it(tmp_path):
    out = tmp_path / "clva"
    main(["mme", "--model", "toy-untrained", "--method", "clva", "--alpha", "0.5", "--beta", "2", "--limit", "2",
          "--subtasks", "color", "--head-prompts", "4", "--max-new-tokens", "2", "--out", str(out)])
    saved = json.loads((out / "result.json").read_text())
    assert saved["fitted_on"]["head_classes"] == "calibration"
    assert saved["fitted_on"]["alpha_beta"] == "given on the command line"
    assert saved["method"]["config"]["alpha"] == 0.5 and saved["method"]["config"]["beta"] == 2.0
    assert saved["evaluated_on"] == "test" and list(saved["scores"]["subtasks"]) == ["color"]
    assert saved["method"]["heads"]["criterion"] == "share"


def test_cli_clva_takes_a_head_criterion(tmp_path):
    out = tmp_path / "focus"
    main(["mme", "--model", "toy-untrained", "--method", "clva", "--head-criterion", "focus", "--limit", "2",
          "--subtasks", "color", "--head-prompts", "4", "--max-new-tokens", "2", "--out", str(out)])
    saved = json.loads((out / "result.json").read_text())
    assert saved["method"]["heads"]["criterion"] == "focus"


@pytest.mark.parametrize("argv,error,match", [
    (["pope", "--method", "clva", "--fit-split", "test"], ValueError, "only be fitted on the calibration split"),
    (["chair", "--method", "clva", "--alpha", "30"], ValueError, "alpha=30.0 is out of range"),
    (["mme", "--method", "vanilla", "--beta", "1"], ValueError, "'vanilla' has no beta"),
    (["pope", "--limit", "0"], ValueError, "--limit 0 must be a positive"),
    (["pope", "--method", "pai", "--head-criterion", "focus"], ValueError, "only applies to --method clva"),
    (["pope", "--split", "dev"], ValueError, "unknown split 'dev'"),
    (["pope", "--pope-file", "x.json"], ValueError, "--pope-file needs --image-dir"),
    (["pope", "--image-dir", "."], ValueError, "--image-dir only applies with --pope-file"),
    (["pope", "--method", "clva", "--pope-file", "x.json", "--image-dir", "."], ValueError,
     "needs --calibration-file"),
])
def test_cli_refuses_bad_requests_before_loading_a_model(argv, error, match, monkeypatch):
    import clva_lite.models.loading

    monkeypatch.setattr(clva_lite.models.loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(error, match=match):
        main(argv)


def test_cli_unknown_method_name_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["pope", "--method", "beam"])
    assert "invalid choice: 'beam'" in capsys.readouterr().err


# ---------------------------------------------------------------- command line, a real POPE file


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return save_tiny_model("llava-llama", tmp_path_factory.mktemp("tiny") / "llava-llama")


def _pope_fixture(root, images=("COCO_val2014_000000000042.png", "COCO_val2014_000000000073.png"),
                  name="coco_pope_random.json"):
    """A POPE file in the published format (one JSON object per line) and its PNG images."""
    image_dir = root / "val2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, image in enumerate(images):
        colour = (40 * k + 30, 120, 200 - 40 * k)
        Image.new("RGB", (40, 30), colour).save(image_dir / image)
        lines += [{"question_id": 2 * k + 1, "image": image, "text": "Is there a star in the image?", "label": "yes"},
                  {"question_id": 2 * k + 2, "image": image, "text": "Is there a moon in the image?", "label": "no"}]
    pope_file = root / name
    pope_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return pope_file, image_dir


def test_cli_pope_file_with_a_hub_style_model(tiny_llava, tmp_path):
    pope_file, image_dir = _pope_fixture(tmp_path)
    out = tmp_path / "run"
    main(["pope", "--model", str(tiny_llava), "--device", "cpu", "--pope-file", str(pope_file), "--image-dir",
          str(image_dir), "--max-new-tokens", "2", "--out", str(out)])
    saved = json.loads((out / "result.json").read_text())
    assert saved["evaluated_on"] == "test: coco_pope_random.json"
    assert saved["n_items"] == 4 and saved["scores"]["random"]["n"] == 4  # sampling read from the file name
    records = [json.loads(line) for line in (out / "records" / "pope-vanilla.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == [1, 2, 3, 4]
    assert records[0]["image_path"] == str(image_dir / "COCO_val2014_000000000042.png")
    assert [r["label"] for r in records] == ["yes", "no", "yes", "no"]

    main(["pope", "--model", str(tiny_llava), "--device", "cpu", "--pope-file", str(pope_file), "--image-dir",
          str(image_dir), "--limit", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "one")])
    assert json.loads((tmp_path / "one" / "result.json").read_text())["n_items"] == 2  # the first image only


def test_cli_pope_file_clva_fits_on_other_images_only(tiny_llava, tmp_path):
    pope_file, image_dir = _pope_fixture(tmp_path)
    overlapping, _ = _pope_fixture(tmp_path, images=("COCO_val2014_000000000073.png",), name="calib.json")
    argv = ["pope", "--model", str(tiny_llava), "--device", "cpu", "--method", "clva", "--pope-file",
            str(pope_file), "--image-dir", str(image_dir), "--max-new-tokens", "2", "--out", str(tmp_path / "c")]
    with pytest.raises(ValueError, match="also evaluated.*COCO_val2014_000000000073.png.*not allowed"):
        main(argv + ["--calibration-file", str(overlapping)])
    other, _ = _pope_fixture(tmp_path, images=("COCO_val2014_000000000999.png",), name="calib_other.json")
    main(argv + ["--calibration-file", str(other)])
    saved = json.loads((tmp_path / "c" / "result.json").read_text())
    assert saved["fitted_on"]["head_classes"] == "calibration"
    assert saved["fitted_on"]["head_classes_data"].startswith("calib_other.json")


def test_cli_pope_file_missing_files_are_clear_errors(tiny_llava, tmp_path, monkeypatch):
    import clva_lite.models.loading

    monkeypatch.setattr(clva_lite.models.loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    pope_file, image_dir = _pope_fixture(tmp_path)
    base = ["pope", "--model", str(tiny_llava), "--device", "cpu", "--out", str(tmp_path / "run")]
    with pytest.raises(FileNotFoundError, match="no such file: .*nowhere.json.*AoiDragon/POPE"):
        main(base + ["--pope-file", str(tmp_path / "nowhere.json"), "--image-dir", str(image_dir)])
    with pytest.raises(FileNotFoundError, match="image folder not found: .*no_dir.*--image-dir"):
        main(base + ["--pope-file", str(pope_file), "--image-dir", str(tmp_path / "no_dir")])
    (image_dir / "COCO_val2014_000000000073.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image file.*COCO_val2014_000000000073.png.*check --image-dir"):
        main(base + ["--pope-file", str(pope_file), "--image-dir", str(image_dir)])
    assert not (tmp_path / "run" / "result.json").exists()
