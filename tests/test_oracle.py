import pytest
import torch

from clva_lite.attention.function import is_attached
from clva_lite.toy.oracle import FixedAnchor, oracle_steering


def test_a_fixed_anchor_rejects_anchors_it_cannot_scale():
    with pytest.raises(ValueError, match="non-negative"):
        FixedAnchor(torch.tensor([[0.5, -0.1]]), 1.0, [3])
    with pytest.raises(ValueError, match="positive weight in every row"):
        FixedAnchor(torch.zeros(2, 4), 1.0, [3])
    with pytest.raises(ValueError, match=r"\(batch, V\)"):
        FixedAnchor(torch.ones(4), 1.0, [3])
    anchor = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    bias = FixedAnchor(anchor, 2.0, [3], empty_rows=True)._bias  # a row of zeros: no bias for that prompt
    assert torch.equal(bias, torch.tensor([[[0.0, 0.0]], [[1.0, 2.0]]]))


def test_oracle_steering_reports_the_stock_model_and_every_setting(toy):
    table = oracle_steering(toy, scenes=2, alphas=(2.0, 20.0))
    assert list(table["anchor"]) == ["none (stock)", "objects", "objects", "background", "background"]
    stock = table.iloc[0]
    assert stock["answers_changed"] == 0
    questions = 2 * 6  # POPE samples three present and three absent objects per scene
    assert (table["true_yes"] + table["false_yes"] == (table["yes_ratio"] * questions).round()).all()
    assert not is_attached(toy.model)


def test_a_fixed_anchor_changes_the_deep_layers_and_leaves_the_model_stock_afterwards(toy):
    from clva_lite.attention.function import attached
    from clva_lite.toy import generate_scene

    inputs = toy.inputs([generate_scene("calibration", 1).image()], ["is there a star"])
    anchor = torch.zeros(1, 144)
    anchor[0, :12] = 1.0  # the top row of patches
    with torch.no_grad():
        stock = toy.model(**inputs).logits[:, -1]
        with attached(toy.model, intervention=FixedAnchor(anchor, 5.0, [14, 15])):
            steered = toy.model(**inputs).logits[:, -1]
        after = toy.model(**inputs).logits[:, -1]
    assert (steered - stock).abs().max() > 1e-3
    assert torch.equal(after, stock)


def test_the_diagnose_command_prints_the_oracle_table(capsys):
    from clva_lite.toy.diagnose import main

    main(["oracle", "toy", "--scenes", "1", "--alphas", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["anchor", "alpha", "f1"]
    assert [line.split()[0] for line in lines[1:]] == ["none", "objects", "background"]


def test_in_the_decoy_world_the_oracle_also_steers_toward_decoys_and_counts_their_false_yes(toy):
    from clva_lite.toy import pope_questions
    from clva_lite.toy.world import generate_scene, using_world

    with using_world("decoys"):
        table = oracle_steering(toy, scenes=6, alphas=(5.0,))
        negatives = [q for q in pope_questions("calibration", 6, "adversarial") if q.label == "no"]
        expected = sum(q.category in {d.category for d in generate_scene("calibration", q.scene_index).decoys}
                       for q in negatives)
    assert list(table["anchor"]) == ["none (stock)", "objects", "background", "decoys"]
    assert expected > 0 and (table["decoy_negatives"] == expected).all()
    assert (table["false_yes_decoy_negatives"] <= table["false_yes"]).all()
    assert list(oracle_steering(toy, scenes=1, alphas=(1.0,))["anchor"]) == ["none (stock)", "objects", "background"]
    with pytest.raises(ValueError, match="unknown oracle targets"):
        oracle_steering(toy, scenes=1, targets=("sky",))
