import pytest
from tqdm.auto import tqdm as live_tqdm

from clva_lite.progress import PROGRESS_ENV, TextBar, tqdm


def test_text_mode_prints_one_line_per_loop(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "text")
    total = sum(tqdm(range(7), desc="scenes", leave=False))
    assert total == 21
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "scenes: 100%" in out and "7/7" in out and "\r" not in out


def test_text_mode_prints_a_manual_bar_once_with_its_final_state(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "text")
    bar = tqdm(total=4, desc="stage vision")
    assert isinstance(bar, TextBar)
    bar.update(3)
    bar.close()
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stage vision:  75%") and "3/4" in lines[0]


def test_live_mode_is_tqdm_auto(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    bar = tqdm(range(2), disable=True)
    assert type(bar) is live_tqdm


def test_an_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "widgets")
    with pytest.raises(ValueError, match="use 'live'"):
        tqdm(range(2))
