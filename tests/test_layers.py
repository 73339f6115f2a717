"""The package's shape, read from the source with ``ast``: what may import what.

Every import counts, wherever it stands: at the top, inside a function, or
under ``if TYPE_CHECKING`` (an import deferred to dodge a cycle is still a
cycle).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import sprintd

REPO = Path(__file__).parents[1]
PLUGINS = REPO / "plugins"


def imports(path: Path, package: str) -> Iterator[tuple[int, str, list[str]]]:
    """Each import in ``path`` as (line, absolute module, names imported from it)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module, [alias.name for alias in node.names]


def plugin_modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(PLUGINS.rglob("*.py")):
        parts = path.relative_to(PLUGINS).with_suffix("").parts
        package = ".".join(("sprintd", "plugins", *parts[:-1]))
        yield path, package


def test_plugins_use_only_the_public_names_of_sprintd() -> None:
    """A built-in plugin is written as a third party's would be: ``from sprintd
    import ...`` and its own modules, never the core's submodules."""
    public = set(sprintd.__all__)
    wrong = []
    for path, package in plugin_modules():
        own = ".".join(package.split(".")[:3])  # sprintd.plugins.<name>
        for line, module, names in imports(path, package):
            where = f"{path.relative_to(REPO)}:{line}"
            if module == "sprintd":
                wrong += [f"{where}: {name} is not public" for name in names if name not in public]
            elif module.startswith("sprintd.") and not module.startswith(own):
                wrong.append(f"{where}: imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_public_name_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Plugin API", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(\w+)", section))
    missing = sorted(set(sprintd.__all__) - documented - {"__version__"})
    assert not missing, f"README's Plugin API section does not name: {missing}"


def core_modules() -> Iterator[tuple[Path, str]]:
    core = REPO / "daemon"
    for path in sorted(core.rglob("*.py")):
        parts = path.relative_to(core).with_suffix("").parts
        yield path, ".".join(("sprintd", *parts[:-1]))


def test_the_core_imports_no_plugin() -> None:
    """The built-ins are registered by name (``manager.BUILTINS``), as pytest's
    are: the core never imports one, so a plugin can never be half-loaded by it."""
    wrong = [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path, package in core_modules()
        for line, module, _ in imports(path, package)
        if module.startswith("sprintd.plugins")
    ]
    assert not wrong, "\n".join(wrong)
