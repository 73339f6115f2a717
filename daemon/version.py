"""The release, in one place: the package facade, the CLI, /health and /metrics read it.

Also which build of it this is: ``setup.py`` compiles ``COMPILED_MODULES`` with
mypyc when ``SPRINTD_COMPILE=1`` asks and it can, and installs the same
modules as pure Python otherwise (README, "Install"); ``build()`` says which
one is installed, and ``load_source`` loads the pure-Python source beside a
compiled build (kept here, with nothing heavier to import than the standard
library: bench/engine measures the pure engine in a process that loads it).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED_MODULES",
    "NATIVE_LIBRARY",
    "__version__",
    "build",
    "load_source",
    "version_line",
]

__version__ = "0.1.0"

COMPILED_MODULES = (
    "sprintd.framing",
    "sprintd.plugins.orders.events",
    "sprintd.plugins.orders.book",
    "sprintd.plugins.orders.done",
    "sprintd.plugins.orders.engine",
)
"""The modules a compiled build compiles. They are one mypyc group (calls and
attribute reads between them are C, not Python), built into one shared library
beside a stub per module: all of them are compiled, or none."""

NATIVE_LIBRARY = "sprintd._native__mypyc"
"""The group's shared library: installed exactly when the build is compiled.
Looking for it imports nothing, and no plugin module."""


@functools.cache
def build() -> dict[str, str | list[str]]:
    """``{"mode": "compiled" | "pure", "compiled": [module, ...]}`` for this install."""
    if importlib.util.find_spec(NATIVE_LIBRARY) is None:
        return {"mode": "pure", "compiled": []}
    return {"mode": "compiled", "compiled": list(COMPILED_MODULES)}


def version_line() -> str:
    """The version and the build in one line, for ``sprintd --version``."""
    compiled = build()["compiled"]
    if not compiled:
        return f"sprintd {__version__} (pure Python)"
    return f"sprintd {__version__} (compiled with mypyc: {', '.join(compiled)})"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<name>`` as ``<directory>/<name>.py`` and nothing else."""

    def __init__(self, package: str, directory: Path) -> None:
        self.package = package
        self.directory = directory

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        package, _, leaf = name.rpartition(".")
        if package != self.package:
            return None
        return importlib.util.spec_from_file_location(name, self.directory / f"{leaf}.py")


def load_source(package: str, directory: Path, modules: Iterable[str]) -> ModuleType:
    """The ``.py`` files ``modules`` of ``directory`` imported from source as the
    submodules of a new package named ``package`` (their relative imports stay
    among them), even where a compiled build installed extension modules beside
    them: the pure-Python reference, in the same process as the compiled build
    (tests/test_compiled.py, bench/engine)."""
    namespace = ModuleType(package)
    namespace.__path__ = []
    sys.modules[package] = namespace
    finder = _SourceFinder(package, directory)
    sys.meta_path.insert(0, finder)
    try:
        for module in modules:
            # Bound here too: loaded a second time, the submodules come from
            # sys.modules, and only a first import binds them to their package.
            setattr(namespace, module, importlib.import_module(f"{package}.{module}"))
    finally:
        sys.meta_path.remove(finder)
    return namespace
