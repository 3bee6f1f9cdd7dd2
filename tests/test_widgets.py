import matplotlib
import pytest
import torch

from clva_lite.plots import widgets as explorer

matplotlib.use("Agg")
pytest.importorskip("ipywidgets")


def test_the_explorer_draws_the_default_view_statically_and_redraws_only_when_a_control_moves(monkeypatch):
    visual = torch.rand(2, 3, 4, 16)  # (steps, layers, heads, V) on a 4 x 4 grid
    drawn = []
    real = explorer.draw_attention
    monkeypatch.setattr(explorer, "draw_attention", lambda *a, **k: drawn.append(k) or real(*a, **k))
    box = explorer.attention_explorer(visual, (4, 4), None, tokens=["a", "b"])
    assert [d["layer"] for d in drawn] == [2]  # the static default view only: nothing captured while the cell runs
    controls, output = box.children
    assert output.outputs == ()
    layer, head, step = controls.children
    layer.value, head.value = 1, 3
    assert [(d["layer"], d["head"]) for d in drawn[1:]] == [(1, None), (1, 3)]
