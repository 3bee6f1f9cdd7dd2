"""The package's layout is part of what it teaches: a small core (``attention/``) that depends on nothing around it,
and no import circles anywhere. Both checks read the source statically, imports inside functions included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clva_lite"
CORE = "clva_lite.attention"
LAB = ("clva_lite.analysis", "clva_lite.eval", "clva_lite.plots", "clva_lite.toy")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str], name: str | None = None) -> set[str]:
    """Modules of the package that ``path`` (module ``name``) imports; ``from x import y`` counts ``x.y`` when it
    is a module."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Edges module -> imported module, plus the package ``__init__`` files an import runs on the way, except
    those the importer already sits inside (they are running when it is imported)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        edges = set()
        for target in imports_of(path, set(known)):
            edges.add(target)
            parts = target.split(".")
            for depth in range(1, len(parts)):
                ancestor = ".".join(parts[:depth])
                if not (name == ancestor or name.startswith(ancestor + ".")):
                    edges.add(ancestor)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if colour[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(n for n in modules() if n == CORE or n.startswith(CORE + ".")))
def test_the_core_imports_nothing_from_the_lab_around_it(name):
    imported = imports_of(modules()[name], set(modules()))
    leaks = sorted(t for t in imported if any(t == lab or t.startswith(lab + ".") for lab in LAB))
    assert not leaks, f"{name} imports {leaks}; attention/ must not depend on analysis, eval, plots or toy"


def test_the_core_check_sees_a_forbidden_import(tmp_path):
    planted = tmp_path / "capture.py"
    planted.write_text((PACKAGE / "attention" / "capture.py").read_text() + "\n\ndef f():\n"
                       "    from ..eval.scoring import format_ci\n")
    imported = imports_of(planted, set(modules()), name="clva_lite.attention.capture")
    assert "clva_lite.eval.scoring" in imported


def test_the_core_stays_readable_in_one_sitting():
    lines = sum(len(path.read_text().splitlines()) for path in (PACKAGE / "attention").glob("*.py"))
    # 1,800: nine model families' image grids (spans.py) and deferred capture rows now live here too
    assert lines < 1800, f"attention/ has grown to {lines} lines; move what is not the core out of it"
