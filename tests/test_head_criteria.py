"""Head criteria (share, focus, share x focus): what they rank by, where they are used, how they are chosen."""

import numpy as np
import pytest
import torch

import clva_lite
from clva_lite.attention.clva import CLVAConfig, CLVAIntervention
from clva_lite.attention.heads import CRITERIA, HeadClasses, fit_head_classes, head_focus, visual_focus
from clva_lite.eval.items import question_items
from clva_lite.eval.sweep import choose_on_calibration
from clva_lite.toy import pope_questions


def _visual(rows):
    """(N=1, L, H, V) visual attention from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[None]


def test_focus_is_one_for_one_patch_and_zero_for_uniform():
    assert torch.allclose(visual_focus(torch.tensor([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])),
                          torch.tensor([1.0, 0.0]), atol=1e-6)
    # scale-free: only the distribution over the image matters, not how much attention the image gets
    assert torch.allclose(visual_focus(torch.tensor([0.02, 0.0, 0.0, 0.0])), torch.tensor(1.0), atol=1e-6)


def test_criteria_rank_heads_differently_on_a_hand_case():
    # layer 0: head 0 looks at the image a lot but everywhere; head 1 a little, at one patch; head 2 middling
    visual = _visual([[[0.2, 0.2, 0.2, 0.2], [0.1, 0.0, 0.0, 0.0], [0.5, 0.1, 0.0, 0.0]]])
    shares = torch.zeros(1, 1, 3, 4)
    shares[..., 1] = visual.sum(-1)
    base = fit_head_classes(shares, visual=visual, split="calibration", fraction=0.34)
    pick = {c: base.with_criterion(c).sensitive([0])[0].nonzero().flatten().tolist() for c in CRITERIA}
    assert pick == {"share": [0], "focus": [1], "share_focus": [2]}
    assert base.with_criterion("focus").insensitive([0])[0].nonzero().flatten().tolist() == [0]
    assert torch.allclose(base.focus, head_focus(visual))


def test_focus_criteria_need_the_heads_focus_and_name_the_choices():
    share = torch.rand(4, 2)
    with pytest.raises(ValueError, match="needs each head's focus"):
        HeadClasses(share, criterion="focus")
    with pytest.raises(ValueError, match=r"use one of \('share', 'focus', 'share_focus'\)"):
        HeadClasses(share, criterion="entropy")
    with pytest.raises(ValueError, match="use one of"):
        CLVAConfig(head_criterion="looking")
    with pytest.raises(ValueError, match="use one of"):
        fit_head_classes(torch.rand(1, 4, 2, 4), split="calibration", criterion="nope")


def test_clva_uses_the_configured_criterion_over_the_heads_own():
    share = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    focus = torch.tensor([[0.1, 0.9], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]])
    heads = HeadClasses(share, focus=focus, fraction=0.5)
    bands = {"early": [0], "intermediate": [1], "deep": [3]}
    by_share = CLVAIntervention(CLVAConfig(**bands), 4, 2, heads)
    by_focus = CLVAIntervention(CLVAConfig(**bands, head_criterion="focus"), 4, 2, heads)
    assert by_share.criterion == "share" and by_focus.criterion == "focus"
    assert by_share.positive_heads[1].tolist() == [True, False]
    assert by_focus.positive_heads[1].tolist() == [False, True]
    assert by_focus.negative_heads[0].tolist() == [True, False]  # lowest focus in the early band


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_runs_per_input_and_calibrated_on_a_model(untrained, criterion):
    inputs = untrained.inputs([clva_lite.toy.generate_scene("calibration", 0).image()], ["is there a star ?"])
    heads = clva_lite.calibrate_heads(untrained, [clva_lite.toy.generate_scene("calibration", i).image()
                                                  for i in range(4)], ["describe the image ."] * 4,
                                      split="calibration", criterion=criterion)
    assert heads.criterion == criterion and heads.focus is not None
    with torch.no_grad():
        stock = untrained.model(**inputs).logits
        for config, given in ((CLVAConfig(alpha=2.0, beta=1.0), heads),
                              (CLVAConfig(alpha=2.0, beta=1.0, head_source="per-input", head_criterion=criterion),
                               None)):
            with clva_lite.clva(untrained, config, heads=given) as iv:
                steered = untrained.model(**inputs).logits
            assert iv.criterion == criterion
            assert iv.positive_anchor is not None and iv.negative_anchor is not None
            assert not torch.allclose(stock, steered)


def test_choose_on_calibration_takes_the_best_cell_and_shares_the_stock_point(untrained, monkeypatch):
    import clva_lite.eval.sweep as sweep_module

    calls = []

    def fake_sweep(loaded, heads, items, alphas, betas, **kwargs):
        alpha, beta = alphas[0], betas[0]
        calls.append((heads.criterion, alpha, beta))
        value = {"share": 0.5, "focus": 0.7, "share_focus": 0.6}[heads.criterion] + 0.01 * alpha - 0.02 * beta
        return {"values": np.array([[0.4 if alpha == beta == 0 else value]])}

    monkeypatch.setattr(sweep_module, "sweep_weights", fake_sweep)
    heads = HeadClasses(torch.rand(untrained.num_layers, untrained.num_heads),
                        focus=torch.rand(untrained.num_layers, untrained.num_heads))
    items = question_items(pope_questions("calibration", 6, "adversarial"))
    assert items
    choice = choose_on_calibration(untrained, heads, items, alphas=(0.0, 1.0), betas=(0.0, 1.0))
    assert choice["best"] == {"criterion": "focus", "alpha": 1.0, "beta": 0.0}
    assert choice["heads"].criterion == "focus" and choice["values"].shape == (3, 2, 2)
    assert sum(1 for c in calls if c[1:] == (0.0, 0.0)) == 1  # the stock point ran once for all criteria
    assert np.all(choice["values"][:, 0, 0] == 0.4)
    assert choice["split"] == "calibration" and "ties go to the earlier criterion" in choice["rule"]


def test_cells_whose_anchors_in_use_match_run_once_and_equal_a_fresh_run(untrained, monkeypatch):
    import clva_lite.eval.sweep as sweep_module

    real_sweep, calls = sweep_module.sweep_weights, []

    def counted(*args, **kwargs):
        calls.append(args[3:5])
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep_weights", counted)
    share = torch.rand(untrained.num_layers, untrained.num_heads, generator=torch.Generator().manual_seed(3))
    heads = HeadClasses(share, focus=share.clone())  # every criterion ranks the heads alike
    items = question_items(pope_questions("calibration", 2, "adversarial"))
    choice = choose_on_calibration(untrained, heads, items, alphas=(0.0, 2.0), betas=(0.0, 2.0))
    assert len(calls) == 4  # one run per (alpha, beta), shared by the three criteria
    assert np.all(choice["values"] == choice["values"][:1])
    for i, alpha in enumerate((0.0, 2.0)):
        for j, beta in enumerate((0.0, 2.0)):
            fresh = real_sweep(untrained, heads.with_criterion("focus"), items, [alpha], [beta])["values"][0, 0]
            assert choice["values"][1, i, j] == fresh


def test_choose_on_calibration_refuses_the_test_split(untrained):
    heads = HeadClasses(torch.rand(untrained.num_layers, untrained.num_heads),
                        focus=torch.rand(untrained.num_layers, untrained.num_heads))
    with pytest.raises(ValueError, match="must not see the test split"):
        choose_on_calibration(untrained, heads, question_items(pope_questions("test", 6, "adversarial")),
                              alphas=(0.0,), betas=(1.0,))
    with pytest.raises(ValueError, match="no calibration items"):
        choose_on_calibration(untrained, heads, [], alphas=(0.0,), betas=(1.0,))


def test_a_tie_goes_to_the_earlier_criterion_and_smaller_weights(untrained, monkeypatch):
    import clva_lite.eval.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "sweep_weights", lambda *a, **k: {"values": np.array([[0.5]])})
    heads = HeadClasses(torch.rand(untrained.num_layers, untrained.num_heads),
                        focus=torch.rand(untrained.num_layers, untrained.num_heads))
    choice = choose_on_calibration(untrained, heads, question_items(pope_questions("calibration", 6, "random")),
                                   alphas=(0.0, 1.0), betas=(0.0, 1.0))
    assert choice["best"] == {"criterion": "share", "alpha": 0.0, "beta": 0.0}


def test_criterion_table_marks_the_chosen_cell():
    from clva_lite.eval.main_job import criterion_table

    grid = {"alphas": [0.0, 1.0], "betas": [0.0], "chosen": [1.0, 0.0], "chosen_criterion": "focus",
            "pope_adversarial_f1_by_criterion": {"share": [[0.5], [0.6]], "focus": [[0.5], [0.7]]}}
    lines = criterion_table(grid)
    assert lines[0] == "| criterion | α=0, β=0 | α=1, β=0 |"
    assert lines[3] == "| focus | 0.500 | **0.700** |" and "**" not in lines[2]


def test_criterion_grid_figure_has_one_panel_per_criterion():
    from clva_lite.plots import criterion_grid

    choice = {"values": np.random.rand(3, 2, 2), "criteria": list(CRITERIA), "alphas": [0.0, 1.0],
              "betas": [0.0, 1.0], "metric": "f1", "best": {"criterion": "focus", "alpha": 1.0, "beta": 0.0},
              "split": "calibration"}
    figure = criterion_grid(choice)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [f"criterion: {c}" for c in CRITERIA]


def test_compare_criteria_on_a_hand_case():
    from clva_lite.analysis.sensitivity import compare_criteria

    # 2 layers x 2 heads; layer 0 is early, layer 1 intermediate
    share = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    focus = torch.tensor([[0.2, 0.9], [0.1, 0.7]])
    on_object = torch.tensor([[0.1, 0.6], [0.05, 0.5]])
    classes = HeadClasses(share, focus=focus, fraction=0.5)
    table = compare_criteria(classes, on_object, {"early": [0], "intermediate": [1]}, uniform=0.2)
    # share picks A+ = (1, 0) (0.05 on objects) and A- = (0, 1) (0.6): the wrong way round
    assert table.loc["share", "A+ on-object share"] == pytest.approx(0.05)
    assert table.loc["share", "A- on-object share"] == pytest.approx(0.6)
    assert not table.loc["share", "A+ > uniform and A-"]
    # focus picks A+ = (1, 1) (0.5) and A- = (0, 0) (0.1)
    assert table.loc["focus", "A+ on-object share"] == pytest.approx(0.5)
    assert table.loc["focus", "A- entropy"] == pytest.approx(0.8)
    assert table.loc["focus", "A+ > uniform and A-"]
    assert table.loc["focus", "r(score, on-object share)"] > 0 > table.loc["share", "r(score, on-object share)"]


def test_main_job_verdicts_are_holm_corrected_over_every_delta_in_the_table():
    from clva_lite.eval.main_job import delta_verdicts

    delta = lambda value, low, high, p: {"value": value, "low": low, "high": high, "p": p}  # noqa: E731
    table = {"vanilla": {},
             "CLVA": {"delta_vs_vanilla": {"pope_adversarial_f1": delta(-0.007, -0.014, -0.001, 0.06),
                                           "chair_s": delta(-0.05, -0.09, -0.01, 0.001)}},
             "VCD": {"delta_vs_vanilla": {"pope_random_f1": delta(-0.03, -0.05, -0.016, 0.002)}}}
    lines = delta_verdicts(table)
    assert len(lines) == 3
    # sorted p: 0.001 <= 0.05/3, 0.002 <= 0.05/2, then 0.06 > 0.05/1: the first two are rejected
    assert lines[0].endswith("CI excludes 0, but not significant after Holm over 3")
    assert lines[1].endswith("better than vanilla (Holm over 3)") and "Δ chair_s" in lines[1]
    assert lines[2].endswith("worse than vanilla (Holm over 3)") and "Δ random f1" in lines[2]
