"""Progress bars: live ``tqdm.auto`` bars when you run a notebook, one line of plain text when the notebooks are
executed for committing (``make notebooks`` sets ``CLVA_LITE_PROGRESS=text``).

Jupyter widget bars saved into a notebook render on GitHub and nbviewer as frozen "0%" bars; the text line says
what ran, how far and how fast, and reads the same everywhere.
"""

from __future__ import annotations

import io
import os
import sys

from tqdm import std
from tqdm.auto import tqdm as live_tqdm

PROGRESS_ENV = "CLVA_LITE_PROGRESS"


class TextBar(std.tqdm):
    """A tqdm that draws nothing while it runs and prints its final state once, as plain text, when it closes."""

    def __init__(self, *args, **kwargs):
        kwargs.update(file=io.StringIO(), ascii=True)
        self._printed = False
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        if not self._printed and not self.disable:
            self._printed = True
            self.refresh()
            print(std.tqdm.__str__(self).strip(), file=sys.stdout, flush=True)
        super().close()


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` (live bars), or :class:`TextBar` when ``$CLVA_LITE_PROGRESS`` is ``"text"``."""
    mode = os.environ.get(PROGRESS_ENV, "live")
    if mode not in ("live", "text"):
        raise ValueError(f"{PROGRESS_ENV}={mode!r}; use 'live' (tqdm bars) or 'text' (one line per loop)")
    return (TextBar if mode == "text" else live_tqdm)(*args, **kwargs)
