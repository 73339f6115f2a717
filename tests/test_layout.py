"""The repository's layering: who may import whom.

- ``tests`` and ``bench`` share code only through the installed package
  (``sprintd.testing``, ``sprintd.plugins.payments.emulator``): a test that
  imports a bench, or a bench that imports a test, ties one to the other's
  working-directory layout and makes either unrunnable alone.
- The daemon and its built-in plugins never import the tools shipped beside
  them (the in-process test helpers, the payment-processor emulator): they are
  not on the request path and must not be loaded by ``sprintd run``.
- A built-in plugin is written as a third party's would be: ``from sprintd
  import ...`` (the names the README's Plugin API section documents) and its
  own modules, never the core's submodules; and the core never imports a
  plugin (the built-ins are registered by name, as pytest's are).

Every import is found with ``ast``, in function bodies too, so a lazy import
cannot slip past.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import sprintd

REPO = Path(__file__).resolve().parents[1]
# What the daemon's own modules must not import.
TOOLS = (
    "sprintd.testing",
    "sprintd.plugins.payments.emulator",
    "sprintd.plugins.history.pgserver",
)
# Built-in plugins that extend others (the README's Plugin API): they import
# those plugins' modules too. history projects the orders and payments records.
EXTENDS = {"history": ("orders", "payments")}


# The package each top-level folder installs as (``pyproject.toml``'s package-dir).
PACKAGES = {"daemon": "sprintd", "plugins": "sprintd.plugins"}


def _imports(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of
    ``package``; a relative import is resolved against it."""
    parts = package.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _offenders(folder: str, forbidden: tuple[str, ...], *, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name in skip:
            continue
        top, *inner = path.relative_to(REPO).parent.parts
        package = ".".join([PACKAGES.get(top, top), *inner])
        for line, module in _imports(path.read_text("utf-8"), package):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{name}:{line} imports {module}")
    return found


def test_imports_are_found_in_functions_and_resolved_when_relative() -> None:
    # The scanner itself: a check that cannot see an import cannot fail.
    source = (
        "import os\n"
        "def lazy():\n"
        "    from bench.common import net\n"
        "    from ..emulator import Processor\n"
        "    from . import inprocess\n"
    )
    modules = {module for _, module in _imports(source, "sprintd.plugins.payments")}
    assert {"os", "bench.common", "sprintd.plugins.emulator.Processor"} <= modules
    assert "sprintd.plugins.payments.inprocess" in modules


@pytest.mark.parametrize(("folder", "forbidden"), [("tests", ("bench",)), ("bench", ("tests",))])
def test_tests_and_bench_do_not_import_each_other(folder: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(folder, forbidden) == []


@pytest.mark.parametrize("folder", ["daemon", "plugins"])
def test_the_daemon_does_not_import_the_tools_beside_it(folder: str) -> None:
    skip = ("daemon/testing.py", "plugins/payments/emulator.py", "plugins/history/pgserver.py")
    assert _offenders(folder, TOOLS, skip=skip) == []


def _defined(path: Path) -> set[str]:
    """The names a module binds at its top level."""
    names = set()
    for node in ast.parse(path.read_text("utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _unresolved(folder: str) -> list[str]:
    """Imports of ``folder``'s own modules that name no file, or no name in one
    (neither is type-checked, so a module renamed under them goes unseen)."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        package = ".".join(path.relative_to(REPO).parent.parts)
        for line, module in _imports(path.read_text("utf-8"), package):
            parts = module.split(".")
            if parts[0] != folder:
                continue
            for i in range(len(parts), 0, -1):
                target = REPO.joinpath(*parts[:i])
                source = target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
                if source.is_file():
                    rest = parts[i:]
                    if not rest or (len(rest) == 1 and rest[0] in _defined(source)):
                        break
            else:
                found.append(f"{name}:{line} imports {module}")
    return found


@pytest.mark.parametrize("folder", ["bench", "tests"])
def test_imports_of_the_repositorys_modules_resolve(folder: str) -> None:
    assert _unresolved(folder) == []


def _plugin_offenders(folder: str) -> list[str]:
    public = set(sprintd.__all__)
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        inner = path.relative_to(REPO / folder).parent.parts
        if folder == "plugins":
            extended = EXTENDS.get(inner[0], ()) if inner else ()
            own = tuple(
                ".".join(["sprintd.plugins", *p]) for p in (inner[:1], *[(e,) for e in extended])
            )
            package = ".".join(["sprintd.plugins", *inner])
        else:
            # Third-party plugins, each a top-level module: one that extends a
            # built-in plugin (an order engine) builds on that plugin's modules.
            own, package = ("sprintd.plugins",), ""
        for line, module in _imports(path.read_text("utf-8"), package):
            first = module.split(".")[1] if module.count(".") else ""
            if module == "sprintd" or module.startswith(own) or not module.startswith("sprintd."):
                continue
            if module.count(".") == 1 and first in public:
                continue  # from sprintd import <public name>
            found.append(f"{name}:{line} imports {module}")
    return found


@pytest.mark.parametrize("folder", ["plugins", "tests/plugins_for_tests"])
def test_plugins_use_only_the_public_names_of_sprintd(folder: str) -> None:
    assert _plugin_offenders(folder) == []


def test_every_public_name_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Plugin API", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(\w+)", section))
    missing = sorted(set(sprintd.__all__) - documented - {"__version__"})
    assert not missing, f"README's Plugin API section does not name: {missing}"


def test_the_core_imports_no_plugin() -> None:
    assert _offenders("daemon", ("sprintd.plugins",)) == []


def _layers() -> dict[str, int]:
    """The README's layers of the core: module -> its layer, lowest 1."""
    layout = (REPO / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for number, line in re.findall(r"^(\d+)\. (.*)$", layout, re.M):
        for name in re.findall(r"`([\w.]+)`", line.split(":")[0]):
            layers["sprintd" if name == "sprintd" else f"sprintd.{name}"] = int(number)
    return layers


def _core_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((REPO / "daemon").rglob("*.py")):
        parts = path.relative_to(REPO / "daemon").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(("sprintd", *parts))] = path
    return modules


def test_every_core_module_has_a_layer() -> None:
    layers = _layers()
    packages = {"sprintd.server"}  # a package's __init__ with no code
    assert sorted(set(_core_modules()) - set(layers) - packages) == []
    assert sorted(set(layers) - set(_core_modules())) == []


def test_the_core_imports_only_from_lower_layers() -> None:
    """Every import, at the top, in a function or under TYPE_CHECKING: none
    reaches its own layer or one above, so none can close a cycle."""
    layers = _layers()
    modules = _core_modules()
    wrong = []
    for name, path in modules.items():
        if name not in layers:
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for line, module in _imports(path.read_text("utf-8"), package):
            if module == "sprintd":
                continue  # ``from . import x``: x, yielded next, is what counts
            # A module, or a name from one (``from sprintd import App``: the API).
            target = module if module in modules else module.rsplit(".", 1)[0]
            if target == name or target not in layers:
                continue
            if layers[target] >= layers[name]:
                wrong.append(
                    f"{path.relative_to(REPO)}:{line} ({layers[name]}) imports "
                    f"{target} ({layers[target]})"
                )
    assert not wrong, "\n".join(wrong)
