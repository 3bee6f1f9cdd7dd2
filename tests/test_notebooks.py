"""The notebook series is committed executed and in the house shape (nbmake runs them; this checks their form)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clva_lite.notebooks import REPOSITORY, colab_badge

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
SERIES = ["00_quickstart", "01_attention_drift", "02_head_sensitivity", "03_positive_anchoring",
          "04_negative_anchoring", "05_evaluation", "06_real_models", "07_build_the_toy"]
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_series_is_complete_and_in_order():
    assert [p.stem for p in NOTEBOOKS] == SERIES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(path: Path):
    cells = _load(path)["cells"]
    markdown = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    code = [c for c in cells if c["cell_type"] == "code"]
    first = markdown[0]
    assert colab_badge(path.name) in first, "the Colab badge must point at this notebook (run make notebooks)"
    assert re.search(r"^# \d\d · ", first, re.MULTILINE), "a numbered title"
    assert "Learning goals" in first and "Prerequisites" in first
    setup = _source(code[0])
    assert f'REPOSITORY = "{REPOSITORY}"' in setup and "except ImportError" in setup
    assert "default_device()" in setup and "torch.manual_seed" in setup
    text = "\n".join(markdown)
    assert "## Exercise" in text and "<details><summary>Solution</summary>" in text
    assert "## Summary" in text
    assert any("# Check" in _source(c) and "assert" in _source(c) for c in code), "an exercise check cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path: Path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert all(isinstance(n, int) for n in counts), "every code cell ran (run make notebooks)"
    assert counts == list(range(1, len(code) + 1)), "cells ran top to bottom in one kernel"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures are stored as static images"
