"""Every exercise's check fails while its TODO is open, rejects a wrong answer and accepts the reference one."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import clva_lite
from clva_lite import exercise_solutions, exercises
from clva_lite.exercises import EXERCISES, SOLUTIONS_ENV, NotSolved, check
from clva_lite.toy import generate_scene

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.fixture(autouse=True)
def _no_solutions(monkeypatch):
    monkeypatch.delenv(SOLUTIONS_ENV, raising=False)  # make test sets it for the notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_check_cells_hold_no_solution_and_fail_while_the_todo_is_open(path):
    checks = [(cell, name) for cell in _cells(path) for name in EXERCISES if f'check("{name}"' in cell]
    assert checks, f"{path.name} has no exercise check"
    for cell, name in checks:
        variable = EXERCISES[name].variable
        assert f"if {variable} is None" not in cell, "the check cell must not solve the exercise itself"
        assert any(c.lstrip().startswith(f"{variable} = None") or f"\n{variable} = None" in c for c in _cells(path)), \
            f"{path.name}: no TODO cell sets {variable} to None"
        with pytest.raises(NotSolved, match=variable):
            check(name, None)  # an untouched exercise fails before anything else is read


def test_the_reference_solution_answers_an_open_exercise_only_when_asked(monkeypatch, capsys):
    frequency = {"star": 40, "moon": 10}
    cooccurrence = {("star", "moon"): 8}
    conditional = pd.DataFrame({"moon": [0.2]}, index=["star"])
    context = {"frequency": frequency, "cooccurrence": cooccurrence, "conditional": conditional}
    with pytest.raises(NotSolved):
        check("07-conditional", None, **context)
    monkeypatch.setenv(SOLUTIONS_ENV, "1")
    assert check("07-conditional", None, **context) == pytest.approx(0.2)
    assert "reference solution" in capsys.readouterr().out


def test_cheap_checks_reject_wrong_answers_and_accept_the_solution():
    paper = {"decoder_layers": 32, "key_value_heads": 32, "head_dim": 128}
    estimate = {"kv_cache_per_token": 2 * 32 * 32 * 128 * 2}
    kv = {"paper": paper, "estimate": estimate, "tokens": 640, "batch_size": 8}
    check("06-kv-bytes", exercise_solutions.kv_batch_bytes(**kv), **kv)
    with pytest.raises(AssertionError, match="count K and V"):
        check("06-kv-bytes", exercise_solutions.kv_batch_bytes(**kv) // 2, **kv)  # keys only
    chair = {"values": np.array([[0.3, 0.2], [0.25, 0.4]]), "alphas": [0.0, 1.0], "betas": [0.0, 1.0],
             "best": (0.0, 1.0)}
    assert check("04-lowest-chair", exercise_solutions.lowest_chair(chair=chair), chair=chair) == (0.0, 1.0)
    with pytest.raises(AssertionError, match="smallest"):
        check("04-lowest-chair", (1.0, 1.0), chair=chair)
    records = [{"kind": "adversarial", "label": "no", "response": r, "scene_index": k}
               for k, r in enumerate(("yes", "no", "yes .", "no"))]
    check("05-yes-ratio", 0.5, records=records)
    with pytest.raises(AssertionError):
        check("05-yes-ratio", 0.25, records=records)
    shares = torch.rand(1, 16, 8, 4, generator=torch.Generator().manual_seed(0))
    band = [4, 5, 6, 7]
    check("02-prompt-heads", exercise_solutions.my_heads(shares=shares, band=band), shares=shares, band=band)
    with pytest.raises(AssertionError, match="HeadClasses.sensitive"):
        check("02-prompt-heads", ~exercise_solutions.my_heads(shares=shares, band=band), shares=shares, band=band)


def test_the_clva_bias_exercise_is_checked_against_the_intervention(untrained):
    from clva_lite.analysis.calibration import calibrate_heads

    images = [generate_scene("calibration", i).image() for i in range(4)]
    heads = calibrate_heads(untrained, images, ["is there a star"] * 4, split="calibration")
    inputs = untrained.inputs([generate_scene("calibration", 11).image()], ["is there a star"])
    config = clva_lite.CLVAConfig(alpha=2.0, beta=2.0)
    context = {"loaded": untrained, "inputs": inputs, "heads": heads, "config": config}
    mine = exercise_solutions.my_bias(**context)  # written from a stock capture, as the notebook asks
    check("04-clva-bias", mine, **context)
    with pytest.raises(AssertionError, match="alpha times"):
        check("04-clva-bias", mine * 0.5, **context)
    assert exercises.EXERCISES["04-clva-bias"].variable == "my_bias"
