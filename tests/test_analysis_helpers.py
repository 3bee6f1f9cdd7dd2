"""Pure-tensor helpers behind notebooks 01-05: grounding, head-class stability, anchor correlations, drift by POPE
outcome, comparison tables built from hand-made records, the new plots and lazy submodules. No model runs here."""

import os
import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import clva_lite  # noqa: E402
from clva_lite import plots  # noqa: E402
from clva_lite.analysis.anchors import anchor_correlations, drift_curves, pearson  # noqa: E402
from clva_lite.analysis.drift import POPE_OUTCOMES, drift_by_outcome, pope_outcome  # noqa: E402
from clva_lite.analysis.grounding import object_patch_mask, object_patch_masks, on_object_share  # noqa: E402
from clva_lite.analysis.sensitivity import (
    compare_classes,
    compare_rules,
    jaccard,
    per_input_agreement,
    spearman,
    split_half_stability,
)
from clva_lite.attention.clva import CLVAConfig, CLVAIntervention  # noqa: E402
from clva_lite.attention.heads import HeadClasses  # noqa: E402
from clva_lite.eval.comparison import (
    chair_deltas,
    chair_summary,
    mme_summary,
    pope_deltas,
    pope_summary,
    verdicts,
)
from clva_lite.toy import CATEGORIES, generate_scene  # noqa: E402
from clva_lite.toy.world import patch_labels  # noqa: E402

V = 144  # the toy's 12 x 12 patch grid


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # the few unseeded torch.rand calls below stay deterministic


def _mask(values):
    return torch.tensor(values, dtype=torch.bool)


# --- grounding ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    return generate_scene("calibration", 0)


def test_object_patch_mask_follows_patch_labels(scene):
    categories, _ = patch_labels(scene)
    mask = object_patch_mask(scene)
    assert mask.shape == (V,) and mask.dtype == torch.bool
    assert torch.equal(mask, torch.as_tensor(categories).flatten() < len(CATEGORIES))
    assert 0 < int(mask.sum()) < V  # some object patches, some background
    present = scene.categories[0]
    of_present = object_patch_mask(scene, present)
    assert 0 < int(of_present.sum()) <= int(mask.sum())
    assert not bool((of_present & ~mask).any())  # a category's patches are object patches
    assert torch.equal(of_present, torch.as_tensor(categories).flatten() == CATEGORIES.index(present))
    absent = next(c for c in CATEGORIES if c not in scene.categories)
    assert not bool(object_patch_mask(scene, absent).any())


def test_object_patch_mask_rejects_unknown_categories(scene):
    with pytest.raises(ValueError, match="unknown toy category 'dragon'"):
        object_patch_mask(scene, "dragon")


def test_object_patch_masks_stack_scenes_and_check_lengths(scene):
    other = generate_scene("calibration", 1)
    masks = object_patch_masks([scene, other], [None, other.categories[0]])
    assert masks.shape == (2, V) and masks.dtype == torch.bool
    assert torch.equal(masks[0], object_patch_mask(scene))
    assert torch.equal(masks[1], object_patch_mask(other, other.categories[0]))
    assert torch.equal(object_patch_masks([scene, other])[1], object_patch_mask(other))
    with pytest.raises(ValueError, match="2 scenes but 1 categories"):
        object_patch_masks([scene, other], [None])


def test_on_object_share_is_the_mass_on_masked_patches(scene):
    mask = object_patch_mask(scene)
    on, off = int(mask.nonzero()[0]), int((~mask).nonzero()[0])
    visual = torch.zeros(3, 2, V)  # (N, H, V), raw: not normalised
    visual[0, :, on] = 5.0  # all on one object patch
    visual[1, :, off] = 0.2  # all on background
    visual[2] = 1.0  # uniform
    share = on_object_share(visual, torch.stack([mask] * 3))
    assert share.shape == (3, 2)
    assert torch.allclose(share[0], torch.ones(2))
    assert torch.allclose(share[1], torch.zeros(2))
    assert torch.allclose(share[2], torch.full((2,), float(mask.sum()) / V))
    # (N, V) input as anchoring_effect passes it, and a half-half split
    half = torch.zeros(1, V)
    half[0, on], half[0, off] = 1.0, 3.0
    assert torch.allclose(on_object_share(half, mask[None]), torch.tensor([0.25]))


def test_on_object_share_rejects_mismatched_masks(scene):
    mask = object_patch_mask(scene)
    with pytest.raises(ValueError, match="do not match"):
        on_object_share(torch.rand(2, 4, V), mask[None])  # N differs
    with pytest.raises(ValueError, match="do not match"):
        on_object_share(torch.rand(1, 4, V - 1), mask[None])  # V differs


# --- sensitivity -------------------------------------------------------------------------------------------------


def test_jaccard_hand_cases():
    assert jaccard(_mask([1, 1, 0, 0]), _mask([1, 0, 1, 0])) == pytest.approx(1 / 3)
    assert jaccard(_mask([1, 1, 0]), _mask([1, 1, 0])) == 1.0
    assert jaccard(_mask([1, 0, 0]), _mask([0, 0, 1])) == 0.0
    assert jaccard(_mask([0, 0, 0]), _mask([0, 0, 0])) == 1.0  # both empty
    assert jaccard(_mask([1, 0, 0]), _mask([0, 0, 0])) == 0.0
    assert jaccard(_mask([[1, 1], [1, 0]]), _mask([[1, 0], [0, 0]])) == pytest.approx(1 / 3)


def test_spearman_hand_cases():
    x = torch.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)  # monotone, not linear
    assert spearman(x, -torch.exp(x)) == pytest.approx(-1.0)
    # one swapped pair of 4: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 30, 20, 40])) == pytest.approx(0.8)
    assert spearman(x.view(2, 5), x.view(5, 2) * 2) == pytest.approx(1.0)  # flattened


def test_spearman_gives_tied_values_their_average_rank():
    # scipy.stats.spearmanr([1, 1, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138
    assert spearman(torch.tensor([1.0, 1, 2, 3]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(0.9486833)
    # a constant has no rank order: no correlation with anything (not +-1 from an arbitrary tie order)
    assert spearman(torch.zeros(200), torch.arange(200.0)) == pytest.approx(0.0)
    ties = torch.tensor([0.5] * 40 + [0.1] * 40)
    assert spearman(ties, ties) == pytest.approx(1.0)
    # two tied blocks: the average ranks are a linear map of the values, so Spearman equals Pearson here
    assert spearman(ties, torch.arange(80.0)) == pytest.approx(float(np.corrcoef(ties.numpy(), np.arange(80))[0, 1]))


def _shares_from_visual_share(visual_share: torch.Tensor) -> torch.Tensor:
    """(..., L, H) visual shares -> (..., L, H, 4) group shares whose visual column is them."""
    rest = (1 - visual_share) / 3
    return torch.stack([rest, visual_share, rest, rest], dim=-1)


BANDS = {"early": [0], "intermediate": [1, 2], "deep": [3]}


def test_split_half_stability_of_identical_prompts_is_perfect():
    share = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    shares = _shares_from_visual_share(share).expand(7, -1, -1, -1)
    table = split_half_stability(shares, BANDS, HeadClasses(share), repeats=5)
    assert list(table.index) == list(BANDS)
    assert (table["sensitive overlap"] == 1.0).all() and (table["insensitive overlap"] == 1.0).all()
    assert table["share rank corr."].tolist() == pytest.approx([1.0] * 3)
    assert table.loc["intermediate", "layers"] == "[1, 2]"


def test_split_half_stability_of_noise_is_imperfect_and_seeded():
    shares = _shares_from_visual_share(torch.rand(12, 4, 6, generator=torch.Generator().manual_seed(1)))
    template = HeadClasses(torch.rand(4, 6))
    table = split_half_stability(shares, BANDS, template, repeats=6, seed=3)
    assert table["sensitive overlap"].between(0, 1).all() and table["insensitive overlap"].between(0, 1).all()
    assert table["sensitive overlap"].min() < 1.0
    assert abs(table["share rank corr."].iloc[0]) < 0.9
    pd.testing.assert_frame_equal(table, split_half_stability(shares, BANDS, template, repeats=6, seed=3))


def test_split_half_stability_needs_four_prompts():
    shares = _shares_from_visual_share(torch.rand(3, 4, 6))
    with pytest.raises(ValueError, match="at least 4 prompts"):
        split_half_stability(shares, BANDS, HeadClasses(torch.rand(4, 6)))


def test_per_input_agreement_hand_case():
    # one layer of 4 heads, fraction 0.25: one sensitive and one insensitive head
    calibrated = torch.tensor([[0.9, 0.5, 0.3, 0.1]])
    prompts = torch.stack([calibrated, calibrated.flip(-1), torch.tensor([[0.9, 0.1, 0.3, 0.5]])])
    shares = _shares_from_visual_share(prompts)  # (3, 1, 4, 4)
    classes = HeadClasses(calibrated)
    sensitive = per_input_agreement(shares, classes, [0])
    insensitive = per_input_agreement(shares, classes, [0], kind="insensitive")
    assert sensitive.shape == (3,)
    assert sensitive.tolist() == [1.0, 0.0, 1.0]
    assert insensitive.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="kind must be"):
        per_input_agreement(shares, classes, [0], kind="deep")


def test_per_input_agreement_chooses_per_layer_like_clva():
    # band of 2 layers x 4 heads: calibrated (band-wide top 2) = head 0 of each layer. The prompt's two highest
    # shares are both in layer 0, but CLVA's per-input mode takes the top head of *each* layer: heads 0 and 0 again
    calibrated = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.8, 0.1, 0.2, 0.3]])
    prompt = torch.tensor([[0.9, 0.85, 0.2, 0.3], [0.5, 0.1, 0.2, 0.3]])
    shares = _shares_from_visual_share(prompt[None])
    assert per_input_agreement(shares, HeadClasses(calibrated), [0, 1]).tolist() == [1.0]
    # the per-layer choice matches CLVA's own per-input selection (1 of 4 heads per layer at fraction 0.25)
    intervention = CLVAIntervention(CLVAConfig(head_source="per-input", early=[0], intermediate=[1], deep=[2]),
                                    3, 4, None)
    uniform = torch.full((2, 4, 9), 1 / 9)  # the share criterion ranks by share alone
    chosen = intervention._per_input_heads("positive", uniform, prompt)  # (layers as batch rows, heads)
    assert chosen.bool().tolist() == [[True, False, False, False], [True, False, False, False]]


def test_compare_rules_hand_case():
    share = torch.tensor([[0.9, 0.5, 0.2, 0.01], [0.4, 0.1, 0.04, 0.06]])
    table = compare_rules(share, {"all": [0, 1]}, fraction=0.25, low=0.05, high=0.3)
    assert list(table.columns) == ["top-k (0.25)", "threshold (0.05/0.3)", "overlap (Jaccard)"]
    sensitive, insensitive = table.loc[("all", "sensitive")], table.loc[("all", "insensitive")]
    # top-k: 2 of 8 heads each; threshold: 0.9, 0.5, 0.4 >= 0.3 and 0.01, 0.04 <= 0.05
    assert sensitive["top-k (0.25)"] == 2 and sensitive["threshold (0.05/0.3)"] == 3
    assert sensitive["overlap (Jaccard)"] == pytest.approx(2 / 3)
    assert insensitive["top-k (0.25)"] == 2 and insensitive["threshold (0.05/0.3)"] == 2
    assert insensitive["overlap (Jaccard)"] == 1.0
    one_layer = compare_rules(share, {"second": [1]})
    assert one_layer.loc[("second", "sensitive"), "threshold (0.05/0.3)"] == 1  # only 0.4 in layer 1


def test_compare_classes_same_and_reversed():
    share = torch.rand(4, 6, generator=torch.Generator().manual_seed(2))
    a, reversed_ = HeadClasses(share), HeadClasses(1 - share)
    same = compare_classes(a, a, BANDS)
    assert (same[["sensitive overlap", "insensitive overlap", "share rank corr."]] == 1.0).all().all()
    opposite = compare_classes(a, reversed_, BANDS)
    assert (opposite["sensitive overlap"] == 0.0).all() and (opposite["insensitive overlap"] == 0.0).all()
    assert opposite["share rank corr."].tolist() == pytest.approx([-1.0] * 3)


# --- anchor correlations and drift ---------------------------------------------------------------------------------


def _visual(n=3, layers=4, heads=4, v=16, seed=0):
    return torch.rand(n, layers, heads, v, generator=torch.Generator().manual_seed(seed)) + 0.01


def test_anchor_correlations_pick_the_anchor_heads():
    visual = _visual()
    # early band = layer 0, its insensitive head (lowest share, fraction 0.25 of 4) is head 2;
    # intermediate band = layer 1, its sensitive head is head 3
    share = torch.tensor([[0.5, 0.6, 0.1, 0.7], [0.2, 0.3, 0.4, 0.9], [0.5] * 4, [0.5] * 4])
    classes = HeadClasses(share)
    visual[:, 2] = visual[:, 0, 2:3] * torch.tensor([1.0, 2.0, 3.0, 0.5]).view(1, 4, 1)  # layer 2 = A-, rescaled
    visual[:, 3] = visual[:, 1, 3:4] * 7.0  # layer 3 = A+
    result = anchor_correlations(visual, classes, early=[0], intermediate=[1])
    assert set(result) == {"early_insensitive", "mid_sensitive"}
    assert result["early_insensitive"].shape == (3, 4) and result["mid_sensitive"].shape == (3, 4)
    assert torch.allclose(result["early_insensitive"][:, 2], torch.ones(3), atol=1e-5)
    assert torch.allclose(result["mid_sensitive"][:, 3], torch.ones(3), atol=1e-5)
    assert (result["early_insensitive"][:, 3] < 0.999).all() and (result["mid_sensitive"][:, 2] < 0.999).all()
    # layer 1 against A- by hand
    p = visual / visual.sum(-1, keepdim=True)
    for i in range(3):
        expected = np.corrcoef(p[i, 1].mean(0).numpy(), p[i, 0, 2].numpy())[0, 1]
        assert float(result["early_insensitive"][i, 1]) == pytest.approx(expected, abs=1e-5)


def test_drift_curves_average_anchor_correlations_over_prompts():
    visual = _visual(n=5, layers=6, heads=4, seed=4)
    classes = HeadClasses(torch.rand(6, 4, generator=torch.Generator().manual_seed(5)))
    per_prompt = anchor_correlations(visual, classes, [0], [2, 3])
    curves = drift_curves(visual, classes, [0], [2, 3])
    assert torch.allclose(curves["corr_early_insensitive"], per_prompt["early_insensitive"].mean(0))
    assert torch.allclose(curves["corr_mid_sensitive"], per_prompt["mid_sensitive"].mean(0))
    assert curves["entropy_sensitive"].shape == (6,)
    assert bool(((curves["entropy_sensitive"] > 0) & (curves["entropy_sensitive"] <= 1)).all())


def test_pope_outcome_names_the_four_cases():
    assert pope_outcome("yes", "no") == "hallucination (FP)"
    assert pope_outcome("no", "no") == "correct no (TN)"
    assert pope_outcome("yes", "yes") == "correct yes (TP)"
    assert pope_outcome("no", "yes") == "missed (FN)"
    for prediction, label in (("maybe", "no"), ("yes", "Yes"), ("no", None)):
        with pytest.raises(ValueError, match="must be 'yes'/'no'"):
            pope_outcome(prediction, label)


def test_drift_by_outcome_groups_questions_by_answer():
    bands = {"early": [0], "intermediate": [1], "deep": [2, 3]}
    answers = [("Yes, there is.", "no")] * 3 + [("No.", "no")] * 2 + [("Yes.", "yes"), ("No, there is not.", "yes")]
    records = [{"response": r, "label": label, "scene_index": i // 2} for i, (r, label) in enumerate(answers)]
    visual = _visual(n=len(records), seed=6)
    classes = HeadClasses(torch.rand(4, 4, generator=torch.Generator().manual_seed(7)))
    table = drift_by_outcome(visual, records, classes, bands)
    assert list(table.index) == list(POPE_OUTCOMES.values())
    assert table["n"].to_dict() == {"hallucination (FP)": 3, "correct no (TN)": 2, "correct yes (TP)": 1,
                                    "missed (FN)": 1}
    assert table.loc["correct yes (TP)", "deep r with A+"] == "n < 2"
    deep = anchor_correlations(visual, classes, [0], [1])["early_insensitive"][:, [2, 3]].mean(1)
    value, low, high = map(float, re.findall(r"-?\d+\.\d+", table.loc["hallucination (FP)", "deep r with A-"]))
    assert value == pytest.approx(float(deep[:3].mean()), abs=5e-4)
    assert low <= value <= high
    with pytest.raises(ValueError, match="7 attention rows but 6 records"):
        drift_by_outcome(visual, records[:6], classes, bands)


# --- comparison tables from hand-made records ------------------------------------------------------------------------


def _pope_records(answers, kind="adversarial"):
    labels = ["yes", "no"] * (len(answers) // 2)
    return [{"id": f"q{i}", "scene_index": i // 2, "kind": kind, "label": label, "response": answer,
             "question": f"q{i}"} for i, (answer, label) in enumerate(zip(answers, labels))]


PERFECT = _pope_records(["Yes.", "No."] * 6)
ALL_YES = _pope_records(["Yes."] * 12)


def test_pope_summary_formats_cis_per_sampling():
    table = pope_summary({"vanilla": ALL_YES, "perfect": PERFECT})
    assert list(table.index) == ["vanilla", "perfect"]
    assert ("adversarial", "f1") in table.columns
    assert table.loc["perfect", ("adversarial", "accuracy")] == "100.0 [100.0, 100.0]"
    assert table.loc["vanilla", ("adversarial", "yes_ratio")] == "100.0 [100.0, 100.0]"
    assert table.loc["vanilla", ("adversarial", "accuracy")] == "50.0 [50.0, 50.0]"


def test_pope_deltas_are_paired_and_zero_against_itself():
    records = {"vanilla": ALL_YES, "same": [dict(r) for r in ALL_YES], "perfect": PERFECT}
    deltas = pope_deltas(records, metric="accuracy")
    assert list(deltas.columns) == ["method", "metric", "value", "low", "high", "p"]
    same = deltas[deltas["method"] == "same"].iloc[0]
    assert (same["value"], same["low"], same["high"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    perfect = deltas[deltas["method"] == "perfect"].iloc[0]
    assert perfect["metric"] == "Δ accuracy adversarial"
    assert perfect["value"] == pytest.approx(50.0) and perfect["low"] == pytest.approx(50.0)
    assert "vanilla" not in set(deltas["method"])
    with pytest.raises(ValueError, match="baseline 'stock' is not among"):
        pope_deltas(records, baseline="stock")


def _caption_records(responses):
    return [{"id": f"c{i}", "scene_index": i, "kind": "caption", "truth": ["star", "moon"], "response": r}
            for i, r in enumerate(responses)]


def test_chair_summary_and_deltas():
    clean = _caption_records(["a red star and a blue moon ."] * 4)
    hallucinating = _caption_records(["a red star and a green ring ."] * 2 + ["a red star ."] * 2)
    table = chair_summary({"vanilla": hallucinating, "clean": clean})
    assert table.loc["clean", "chair_s"] == "0.0 [0.0, 0.0]"
    assert table.loc["vanilla", "chair_s"].startswith("50.0 [")
    assert table.loc["clean", "recall"] == "100.0 [100.0, 100.0]"
    assert table.loc["clean", "mean length"] == "7.0"
    deltas = chair_deltas({"vanilla": hallucinating, "clean": clean, "itself": hallucinating})
    assert deltas.set_index("method").loc["itself", ["value", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    assert deltas.set_index("method").loc["clean", "value"] == pytest.approx(-50.0)
    with pytest.raises(ValueError, match="baseline 'stock'"):
        chair_deltas({"vanilla": clean}, baseline="stock")


def test_mme_summary_scores_per_subtask():
    records = []
    for scene in range(3):
        for subtask in ("existence", "count"):
            for label in ("yes", "no"):
                answer = label if subtask == "existence" or scene else "yes"  # count: scene 0's "no" is wrong
                records.append({"kind": subtask, "scene_index": scene, "question": f"{subtask} {label}?",
                                "label": label, "response": answer.capitalize() + "."})
    table = mme_summary({"vanilla": records}, ci=False)
    assert table.loc["vanilla", "existence"] == 200.0
    # count: acc 5/6, acc+ 2/3 -> 83.3 + 66.7 = 150
    assert table.loc["vanilla", "count"] == pytest.approx(150.0, abs=0.1)
    assert table.loc["vanilla", "total"] == pytest.approx(350.0, abs=0.1)
    with_ci = mme_summary({"vanilla": records})  # scene-clustered intervals, the value first
    assert with_ci.loc["vanilla", "existence"] == "200.0 [200.0, 200.0]"
    assert with_ci.loc["vanilla", "count"].startswith("150.0 [")
    assert with_ci.loc["vanilla", "total"].startswith("350.0 [")


def _deltas(rows):
    return pd.DataFrame(rows, columns=["method", "metric", "value", "low", "high", "p"])


def test_verdicts_read_holm_the_ci_and_the_metric_direction():
    lines = verdicts(_deltas([
        ("CLVA", "Δ f1 adversarial", 2.0, 0.5, 3.5, 0.001),
        ("CLVA", "Δ f1 random", -2.0, -3.0, -1.0, 0.002),
        ("PAI", "Δ f1 popular", 1.0, -1.0, 3.0, 0.4),
        ("CLVA", "Δ chair_s", -5.0, -8.0, -2.0, 0.003),
        ("VCD", "Δ CHAIR_i", 4.0, 1.0, 7.0, 0.004),
        ("PAI", "Δ chair_s", -1.0, -3.0, -0.2, 0.03),  # CI excludes 0, but 0.03 > 0.05 / 3 at its Holm step
        ("same", "Δ f1 random", 0.0, 0.0, 0.0, 1.0),
    ]))
    endings = [line.split("-> ")[-1] for line in lines]
    assert endings == ["better than vanilla (Holm over 7)", "worse than vanilla (Holm over 7)",
                       "no difference the data can resolve", "better than vanilla (Holm over 7)",
                       "worse than vanilla (Holm over 7)", "CI excludes 0, but not significant after Holm over 7",
                       "no difference the data can resolve"]
    assert "+2.0 [+0.5, +3.5] p=0.001" in lines[0] and lines[0].lstrip().startswith("CLVA")
    # recall is higher-is-better even for captions
    recall = verdicts(_deltas([("CLVA", "Δ recall", -3.0, -5.0, -1.0, 0.001)]))[0]
    assert recall.endswith("worse than vanilla (Holm over 1)")
    with pytest.raises(ValueError, match="no p-values"):
        verdicts(_deltas([("CLVA", "Δ recall", -3.0, -5.0, -1.0, 0.001)]).drop(columns="p"))


def test_holm_steps_down_and_stops_at_the_first_failure():
    from clva_lite.eval.benchmarks import holm

    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert holm([0.01, 0.04, 0.015, 0.03]) == [True, False, True, False]  # 0.03 > 0.025 stops; 0.04 is not tested
    assert holm([0.2, 0.001]) == [False, True]
    assert holm([0.04, 0.04]) == [False, False]  # each would pass alone at 0.05
    assert holm([]) == []
    with pytest.raises(ValueError, match="alpha"):
        holm([0.1], alpha=0)


def test_bootstrap_p_value_is_one_for_identical_answers_and_small_for_a_clear_difference():
    from clva_lite.eval.benchmarks import paired_bootstrap_test

    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    a = np.array([0.0, 1.0] * 50)
    same = paired_bootstrap_test(a, a.copy(), mean, key=None, n_resamples=200)
    assert same["value"] == 0.0 and same["p"] == 1.0
    better = paired_bootstrap_test(a, np.ones(100), mean, key=None, n_resamples=200)
    assert better["value"] == 0.5 and better["p"] == pytest.approx(2 / 201)
    noisy = paired_bootstrap_test(a, np.roll(a, 1), mean, key=None, n_resamples=200)
    assert noisy["p"] > 0.5


# --- plots ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def close_figures():
    yield
    plt.close("all")


def _heat(ax):
    return ax.images[-1]  # the heat map drawn over the grey image


def test_attention_maps_draw_one_panel_per_map_on_one_scale(scene, close_figures):
    maps = [torch.rand(V), 3 * torch.rand(V), np.ones(V)]
    fig = plots.attention_maps(maps, ["A+", "A-", "uniform"], (12, 12), scene.image(), suptitle="anchors")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["A+", "A-", "uniform"]
    top = max(float(np.max(np.asarray(m))) for m in maps)
    assert all(_heat(ax).get_clim() == pytest.approx((0.0, top)) for ax in panels)  # comparable panels
    assert len(fig.axes) == 4  # and one colour bar
    assert isinstance(plots.attention_maps(maps[:1], ["one"], (12, 12)), Figure)
    with pytest.raises(ValueError, match="3 maps but 2 titles"):
        plots.attention_maps(maps, ["A+", "A-"], (12, 12))


def test_a_signed_map_gets_a_diverging_scale_centred_at_zero(scene, close_figures):
    bias = torch.linspace(-2.0, 0.5, V)
    fig = plots.attention_maps([torch.rand(V), bias], ["deep", "bias"], (12, 12), scene.image(), signed=[1])
    deep, signed = [ax for ax in fig.axes if ax.get_title()]
    assert _heat(signed).get_clim() == pytest.approx((-2.0, 2.0))
    assert _heat(signed).get_cmap().name == "RdBu_r" and _heat(deep).get_cmap().name != "RdBu_r"
    assert len(fig.axes) == 4  # two panels, two colour bars
    with pytest.raises(ValueError, match="signed"):
        plots.attention_maps([bias], ["bias"], (12, 12), signed=[3])


def test_a_grid_of_nearly_equal_cells_does_not_fill_the_colour_range(close_figures):
    values = np.array([[0.790, 0.791], [0.792, 0.793]])
    fig = plots.weight_grid(values, [0, 1], [0, 1], metric="F1", answers=360)
    low, high = fig.axes[0].collections[0].get_clim()
    assert high - low == pytest.approx(10 / 360) and "one answer of 360" in fig.axes[0].get_title()


def test_head_class_map_marks_anchor_heads(close_figures):
    classes = HeadClasses(torch.rand(4, 6, generator=torch.Generator().manual_seed(8)))
    fig = plots.head_class_map(classes, BANDS)
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    # fraction 0.25: 2 insensitive heads of 6 in the early band, 3 of 12 sensitive in the intermediate, 2 of 6 deep
    assert texts.count("I") == 2 and texts.count("S") == 5


def test_metric_curves_and_delta_forest(close_figures):
    table = pd.DataFrame({"alpha": [0.0, 1.0, 2.0], "f1": [0.8, 0.82, 0.81], "chair_s": [0.3, 0.25, 0.2]})
    fig = plots.metric_curves(table, "alpha", ["f1", "chair_s"], title="sweep")
    assert isinstance(fig, Figure) and [ax.get_title() for ax in fig.axes] == ["f1", "chair_s"]
    # the reference row is drawn in every panel, and one item's size bounds how much the y-axis may zoom in
    table.index = ["vanilla", "a1", "a2"]
    fig = plots.metric_curves(table, "alpha", ["f1", "chair_s"], reference="vanilla", steps={"f1": 0.01})
    f1_axis, chair_axis = fig.axes
    assert [line.get_ydata()[0] for line in f1_axis.lines if line.get_linestyle() == "--"] == [0.8]
    low, high = f1_axis.get_ylim()
    assert high - low >= 6 * 0.01 and low <= 0.8 and high >= 0.82
    assert chair_axis.get_ylim()[1] - chair_axis.get_ylim()[0] < 0.2  # no step given: matplotlib's own limits
    deltas = _deltas([("CLVA", "Δ f1 random", 2.0, 0.5, 3.5, 0.01), ("PAI", "Δ f1 random", -1.0, -2.0, 0.5, 0.3),
                      ("CLVA", "Δ chair_s", -5.0, -8.0, -2.0, 0.001)])
    fig = plots.delta_forest(deltas)
    assert isinstance(fig, Figure) and [ax.get_title() for ax in fig.axes] == ["Δ f1 random", "Δ chair_s"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["points   better →", "points   ← better"]


def test_anchor_agreement_by_step(close_figures):
    visual = _visual(n=5, layers=4, seed=9)
    correlations = anchor_correlations(visual, HeadClasses(torch.rand(4, 4)), [0], [1])
    fig = plots.anchor_agreement_by_step(correlations, [2, 3], ["yes", ",", "there", "is", "."])
    assert isinstance(fig, Figure)
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), correlations["early_insensitive"][:, [2, 3]].mean(1).numpy())


# --- lazy submodules -------------------------------------------------------------------------------------------------


def test_submodules_resolve_as_attributes():
    assert clva_lite.analysis.sensitivity.jaccard is jaccard
    assert clva_lite.analysis.grounding is sys.modules["clva_lite.analysis.grounding"]
    assert clva_lite.analysis.__getattr__("drift").pope_outcome is pope_outcome
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        clva_lite.no_such_thing  # noqa: B018
    assert not hasattr(clva_lite, "pyplot")


def test_plots_are_imported_only_when_asked_for():
    code = ("import sys, clva_lite; assert 'clva_lite.plots' not in sys.modules; "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert callable(clva_lite.plots.delta_forest); assert 'clva_lite.plots' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)


def test_pearson_of_anchor_equals_one():  # sanity check of the helper the anchors rely on
    x = torch.rand(3, 16)
    assert torch.allclose(pearson(x, 2 * x + 1), torch.ones(3), atol=1e-6)


def test_one_item_steps_are_what_one_answer_or_caption_moves():
    from clva_lite.eval.ablation import one_item_steps

    # 10 answers: TP 4, FP 2, FN 1, TN 3 -> F1 = 8 / 11; turning one FP into a TN gives 8 / 10
    pope = pd.DataFrame({"n": [10], "yes_ratio": [0.6], "fp": [2], "recall": [0.8], "f1": [8 / 11]},
                        index=["vanilla"])
    steps = one_item_steps(pope, pd.DataFrame({"n": [40]}, index=["vanilla"]))
    assert abs(steps["f1"] - (0.8 - 8 / 11)) < 0.01
    assert steps["yes_ratio"] == 0.1 and steps["fp"] == 1.0 and steps["chair_s"] == 1 / 40
