"""Submodules reachable as package attributes (``clva_lite.plots``...) without importing them up front."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType


def lazy_submodules(package: str, names: tuple[str, ...]) -> Callable[[str], ModuleType]:
    """A module ``__getattr__`` that imports ``package.<name>`` on first access, for the given names only."""

    def __getattr__(name: str) -> ModuleType:
        if name in names:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
