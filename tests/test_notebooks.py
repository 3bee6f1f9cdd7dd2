"""The notebook series is committed executed and in the house shape (nbmake runs them; this checks their form)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clva_lite.notebooks import REPOSITORY, colab_badge, read_repository, refresh_badge, setup_preamble

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
    assert setup.startswith(setup_preamble()), "the setup cell opens with the one template (run make notebooks)"
    assert f'REPOSITORY = "{REPOSITORY}"' in setup
    assert "default_device()" in setup and "torch.manual_seed" in setup
    text = "\n".join(markdown)
    assert "## Exercise" in text and "<details><summary>Solution</summary>" in text
    assert "## Summary" in text
    assert any("# Check" in _source(c) and "clva_lite.exercises.check(" in _source(c) for c in code), \
        "an exercise check cell (clva_lite.exercises: it fails while the TODO is open)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path: Path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert all(isinstance(n, int) for n in counts), "every code cell ran (run make notebooks)"
    assert counts == list(range(1, len(code) + 1)), "cells ran top to bottom in one kernel"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures are stored as static images"


TQDM_TEXT = re.compile(r"\d+/\d+ \[")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_progress_bars_leave_text_not_frozen_widgets(path: Path):
    outputs = [o for c in _load(path)["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    widgets = [o["data"] for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    texts = ["".join(w.get("text/plain", "")) for w in widgets]
    bars = [t for t in texts if TQDM_TEXT.search(t) or t.startswith("HBox(children=(HTML")]
    assert not bars, f"{len(bars)} tqdm widget outputs would render as frozen bars (run make notebooks)"


def test_the_repository_comes_from_pyproject(tmp_path, monkeypatch):
    monkeypatch.delenv("CLVA_LITE_REPOSITORY", raising=False)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/someone/their-fork"\n')
    assert read_repository(pyproject) == "someone/their-fork"
    assert "someone/their-fork" in setup_preamble(read_repository(pyproject))
    monkeypatch.setenv("CLVA_LITE_REPOSITORY", "other/slug")
    assert read_repository(pyproject) == "other/slug"
    monkeypatch.delenv("CLVA_LITE_REPOSITORY")
    pyproject.write_text("[project]\nname = 'x'\n")
    with pytest.raises(ValueError, match=r"no Repository = .*\[project.urls\]"):
        read_repository(pyproject)


def test_a_failed_install_says_what_to_do(tmp_path):
    """The setup cell's install branch, run where clva_lite is not importable and the clone fails."""
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\necho 'fatal: repository not found' >&2\nexit 128\n")
    (bin_dir / "git").chmod(0o755)
    code = "import sys; sys.modules['clva_lite'] = None\n" + setup_preamble("nobody/missing")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=60)
    assert result.returncode != 0
    assert "could not clone https://github.com/nobody/missing.git" in result.stderr
    assert "Set REPOSITORY" in result.stderr and "pip install -e" in result.stderr


def test_refreshing_rewrites_only_the_install_part_of_the_setup_cell():
    import nbformat

    old = ('# Setup: old text\nREPOSITORY = "x/y"\ntry:\n    import clva_lite\nexcept ImportError:\n'
           '    import subprocess\n    import clva_lite\n\nimport torch\nprint(torch.__version__)\n')
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · t"),
                                               nbformat.v4.new_code_cell(old)])
    refresh_badge(notebook)
    assert notebook.cells[1].source == setup_preamble() + "\nimport torch\nprint(torch.__version__)\n"
    notebook.cells[1].source = "import torch\n"
    with pytest.raises(ValueError, match="must open with the setup block"):
        refresh_badge(notebook)


READING = re.compile(r"^\*\*(Reading it|What the toy shows)")
NUMBER = re.compile(r"(?<![\w.-])\d+\.\d+")  # not a version such as LLaVA-1.5


def _output_text(cells: list[dict]) -> str:
    texts = []
    for cell in cells:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            texts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(texts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbers_quoted_in_readings_come_from_this_notebooks_outputs(path: Path):
    """A reading ("**Reading it.**", "**What the toy shows.**") states what this run printed: every decimal number it
    quotes appears in one of the notebook's text outputs (re-execute, then re-read, when one does not)."""
    cells = _load(path)["cells"]
    printed = _output_text(cells)
    missing = [(number, _source(c)[:60]) for c in cells if c["cell_type"] == "markdown" and READING.match(_source(c))
               for number in NUMBER.findall(_source(c)) if number not in printed]
    assert not missing, f"numbers in readings that no output of {path.name} shows: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_readings_say_what_was_measured_instead_of_pointing_at_the_output(path: Path):
    readings = [_source(c) for c in _load(path)["cells"] if c["cell_type"] == "markdown" and READING.match(_source(c))]
    deferring = [r[:80] for r in readings if re.search(r"printed lines (above|say)|rather than this paragraph", r)]
    assert not deferring, f"readings that leave the reading to the printed lines: {deferring}"
    placeholders = [r[:80] for r in readings if re.search(r"\b[A-Z]+_[A-Z_]+\b", r)]
    assert not placeholders, f"readings with an unfilled placeholder: {placeholders}"
