"""Re-execute the notebook series in place: ``python -m clva_lite.notebooks execute notebooks`` (or given files).

Each notebook runs top to bottom in a fresh kernel with ``PYTHONHASHSEED=0`` and one torch thread count, so two
runs give the same numbers; outputs (figures as static PNGs) are written back into the file. Progress bars print
one line of text (``CLVA_LITE_PROGRESS=text``, see :mod:`clva_lite.progress`) instead of widgets that would be
saved as frozen bars. Before running, each notebook's Colab badge and the install part of its setup cell are
rewritten from :data:`SETUP_TEMPLATE` and the repository named in ``pyproject.toml`` (``[project.urls]
Repository``; ``$CLVA_LITE_REPOSITORY`` overrides it for one run).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REPOSITORY_LINE = re.compile(r'^Repository = "https://github.com/([^"/]+/[^"/]+?)/?"', re.MULTILINE)
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SETUP_TEMPLATE = """\
# Setup: works in Colab and locally; installs clva-lite only when it is not importable.
REPOSITORY = "{repository}"  # GitHub copy to install from (docs/how-it-works.md, "Where the notebooks install from")
try:
    import clva_lite
except ImportError:
    import subprocess, sys
    url, folder = f"https://github.com/{{REPOSITORY}}.git", "clva-lite"
    if subprocess.run(["git", "clone", "--depth", "1", url, folder]).returncode != 0:
        raise RuntimeError(f"could not clone {{url}}. Set REPOSITORY to the GitHub slug of your copy of clva-lite, "
                           "or install it first (pip install -e /path/to/clva-lite, or pip install the wheel) "
                           "and run this cell again") from None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", folder], check=True)
    sys.path.insert(0, folder)
    import clva_lite
"""
SETUP_BLOCK = re.compile(r"\A# Setup:.*?\nexcept ImportError:\n(?:    [^\n]*\n)+", re.DOTALL)


def read_repository(pyproject: Path = PYPROJECT) -> str:
    """The ``owner/name`` slug of ``[project.urls] Repository``: from pyproject.toml in a checkout, else from the
    installed package's metadata (which pip copies from it); ``$CLVA_LITE_REPOSITORY`` overrides both."""
    if os.environ.get("CLVA_LITE_REPOSITORY"):
        return os.environ["CLVA_LITE_REPOSITORY"]
    if pyproject.exists():
        text, where = pyproject.read_text(), str(pyproject)
    else:
        from importlib.metadata import metadata

        urls = metadata("clva-lite").get_all("Project-URL") or []
        text, where = "\n".join('Repository = "' + u.split(", ", 1)[-1] + '"' for u in urls), "clva-lite's metadata"
    match = REPOSITORY_LINE.search(text)
    if match is None:
        raise ValueError(f'{where} has no Repository = "https://github.com/OWNER/NAME" under [project.urls]; add '
                         "it to pyproject.toml (the notebooks install from and link to that repository)")
    return match.group(1)


REPOSITORY = read_repository()


def setup_preamble(repository: str = REPOSITORY) -> str:
    """The install part that opens every notebook's setup cell."""
    return SETUP_TEMPLATE.format(repository=repository)


def colab_badge(notebook: str) -> str:
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def refresh_badge(notebook) -> None:
    """Point the Colab badge at ``REPOSITORY`` and rewrite the setup cell's install part from the template."""
    name = notebook.metadata.get("clva_lite_name", "")
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE.sub(colab_badge(name), cell.source)
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    if not SETUP_BLOCK.match(setup.source):
        raise ValueError(f"{name}: the first code cell must open with the setup block (# Setup: ... except "
                         "ImportError: ...); see clva_lite.notebooks.SETUP_TEMPLATE")
    setup.source = SETUP_BLOCK.sub(lambda _: setup_preamble(), setup.source, count=1)


def execute_notebook(path: Path, timeout: int = 600) -> float:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["clva_lite_name"] = path.name
    refresh_badge(notebook)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ["CLVA_LITE_PROGRESS"] = "text"  # the kernel inherits it: bars leave text, not frozen widgets
    os.environ["CLVA_LITE_SOLUTIONS"] = "1"  # exercises left open are answered by their reference solutions
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # and transformers' "Loading weights" bar leaves nothing
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
