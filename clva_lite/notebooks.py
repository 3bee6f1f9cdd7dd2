"""Re-execute the notebook series in place: ``python -m clva_lite.notebooks execute notebooks`` (or given files).

Each notebook runs top to bottom in a fresh kernel with ``PYTHONHASHSEED=0`` and one torch thread count, so two
runs give the same numbers; outputs (figures as static PNGs) are written back into the file.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

REPOSITORY = "clva-lite/clva-lite"  # the GitHub slug: Colab badges and the setup cells read it from here
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def colab_badge(notebook: str) -> str:
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


SLUG_LINE = re.compile(r'^REPOSITORY = "[^"]*"', re.MULTILINE)


def refresh_badge(notebook) -> None:
    """Point the Colab badge and the setup cell's ``REPOSITORY = "..."`` line at ``REPOSITORY``."""
    name = notebook.metadata.get("clva_lite_name", "")
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE.sub(colab_badge(name), cell.source)
        elif cell.cell_type == "code":
            cell.source = SLUG_LINE.sub(f'REPOSITORY = "{REPOSITORY}"', cell.source)


def execute_notebook(path: Path, timeout: int = 600) -> float:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["clva_lite_name"] = path.name
    refresh_badge(notebook)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.time()
    client.execute()
    nbformat.write(notebook, path)
    return time.time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clva_lite.notebooks")
    parser.add_argument("command", choices=["execute"])
    parser.add_argument("paths", nargs="*", default=["notebooks"],
                        help="notebook files or folders (default: notebooks)")
    args = parser.parse_args(argv)
    notebooks: list[Path] = []
    for given in map(Path, args.paths):
        if given.is_dir():
            notebooks += sorted(given.glob("*.ipynb"))
        elif given.suffix == ".ipynb" and given.exists():
            notebooks.append(given)
        else:
            raise SystemExit(f"{given} is neither a folder nor an .ipynb file")
    if not notebooks:
        raise SystemExit(f"no notebooks in {' '.join(args.paths)}")
    for path in notebooks:
        print(f"{path.name}: {execute_notebook(path):.1f} s", flush=True)


if __name__ == "__main__":
    main()
