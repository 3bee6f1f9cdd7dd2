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
