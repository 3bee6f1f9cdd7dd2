"""The premise report measures P1-P5 on calibration data, each from what it says it is computed from."""

import json

import numpy as np
import pytest
import torch

from clva_lite.analysis.lens import settled_layer, yes_no_margins
from clva_lite.analysis.premise import LINKS, premise_report, toy_premise_report
from clva_lite.eval.items import question_items
from clva_lite.toy.questions import pope_questions

SMALL = {"criteria": ("share",), "alphas": (0.0, 3.0), "betas": (0.0,), "n_resamples": 200}


@pytest.fixture(scope="module")
def report(untrained):
    return toy_premise_report(untrained, head_prompts=8, scenes=6, **SMALL)


def test_every_link_has_a_row_and_a_verdict(report):
    table = report.table
    assert set(table["link"]) == set(LINKS)
    measured = table.dropna(subset=["low"])  # the untrained toy may say "no" to everything (no hallucination)
    assert len(measured) >= 4
    assert (measured["low"] <= measured["value"] + 1e-9).all() and (measured["value"] <= measured["high"] + 1e-9).all()
    assert not table[table["low"].isna()]["holds"].any()
    p3 = table[table["link"] == "P3"].iloc[0]
    assert np.isnan(p3["p"])  # a share against a threshold, not a test
    for row in table[table["link"] != "P3"].itertuples():
        assert row.holds == (row.holm and row.value > 0)
    assert all(link in report.summary() for link in LINKS)


def test_p3_is_the_lens_share_settled_before_the_deep_band(untrained, report):
    items = question_items(pope_questions("calibration", 6, "adversarial"))
    margins = yes_no_margins(untrained, [i.image() for i in items], [i.question for i in items])
    first_deep = min(report.details["bands"]["deep"])
    expected = float((settled_layer(margins) < first_deep).float().mean())
    assert report.table[report.table["link"] == "P3"]["value"].iloc[0] == pytest.approx(expected, abs=1e-6)


def test_p5_chooses_on_half_the_scenes_and_measures_on_the_other(report):
    p5 = report.details["P5"]
    assert p5["choice_scenes"] == 3 and p5["held_out_scenes"] == 3
    assert p5["held_out_questions"] == 18
    assert p5["chosen"]["alpha"] in SMALL["alphas"]


def test_test_split_items_and_mismatched_prompts_are_refused(untrained):
    images = [torch.zeros(1)] * 2
    with pytest.raises(ValueError, match="calibration data only"):
        premise_report(untrained, images, ["a", "b"], question_items(pope_questions("test", 2, "random")))
    with pytest.raises(ValueError, match="2 head images for 1 head questions"):
        premise_report(untrained, images, ["a"], question_items(pope_questions("calibration", 2, "random")))


def test_a_saved_report_loads_back_the_same(report, tmp_path):
    from clva_lite.analysis.premise import PremiseReport

    report.save(tmp_path / "report.json")
    loaded = PremiseReport.load(tmp_path / "report.json")
    assert loaded.summary() == report.summary()
    assert loaded.details["P5"]["held_out_questions"] == report.details["P5"]["held_out_questions"]
    with pytest.raises(FileNotFoundError, match="python -m clva_lite premise"):
        PremiseReport.load(tmp_path / "missing.json")


def test_the_premise_chart_has_one_panel_per_statistic_with_its_verdict(report):
    from clva_lite.plots import premise_chart

    figure = premise_chart(report)
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert len(titles) == len(report.table)
    for title, row in zip(titles, report.table.itertuples()):
        verdict = "holds" if row.holds else "does not hold"
        assert title.startswith(row.link) and f": {verdict}" in title
        assert ("not measurable" in title) == bool(np.isnan([row.value, row.low, row.high]).any())
    assert any("must stay below 0.7" in t for t in titles)  # P3 is a share against a threshold, not a test


def test_the_premise_command_writes_the_report_and_its_chart(tmp_path, capsys):
    from clva_lite.__main__ import main

    out = tmp_path / "premise" / "toy.json"
    main(["premise", "--model", "toy", "--scenes", "4", "--head-prompts", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "P5 CLVA raises POPE-adversarial F1" in printed and out.is_file() and out.with_suffix(".png").is_file()
    assert json.loads(out.read_text())["details"]["command"]["scenes"] == 4
