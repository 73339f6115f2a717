"""The build's one choice: the matching engine's hot modules compiled with mypyc, or not.

Everything else about the package is declared in pyproject.toml. With
``SPRINTD_COMPILE=1`` in the environment this file adds the extension modules
when it can: mypyc compiles the modules that ``sprintd.version.COMPILED_MODULES``
names, the same source files that ship as Python, into C (typed attribute and
list access, direct calls between them). Without it the build is pure Python:
compiled, the engine measured no faster than the interpreter runs it and held
100,000 resting orders in 28 MB against 19 (README, "Install"), so it is a
choice, not the default. The .py files are always installed too, so a build
that cannot compile is the pure-Python build, and the install succeeds either way:

* ``SPRINTD_COMPILE`` unset (or not ``1``): no extensions;
* mypyc is not importable (``[build-system] requires`` brings it with mypy, so
  only a build without isolation can lack it);
* mypyc refuses the source, or the C compiler is missing or fails (no gcc, no
  Python headers): the extensions built so far are removed, with a warning.

``sprintd --version`` and ``/health``'s ``build`` say which one is installed.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from mypyc.build import mypycify
except ImportError:  # a build without isolation, in an environment without mypy
    mypycify = None

ROOT = Path(__file__).resolve().parent
# The package mapping in pyproject.toml, longest prefix first.
PACKAGE_DIRS = (("sprintd.plugins", "plugins"), ("sprintd", "daemon"))
STAGE = Path("build") / "mypyc-src"
# The C that mypyc writes. Not build/ itself (its default): a build/sprintd/
# directory would be imported as a namespace package "sprintd" by a Python
# started in build/, as make install-check starts them.
C_DIR = Path("build") / "mypyc-c"
# mypy reads no project config for this (pyproject's names plugins, such as
# pydantic's, that the build environment does not have); the compiled modules
# import nothing outside themselves but the standard library and msgpack.
MYPY_CONFIG = "[mypy]\nignore_missing_imports = True\n"


def _say(message: str) -> None:
    print(f"sprintd build: {message}", file=sys.stderr)


def _source(module: str) -> Path:
    for package, directory in PACKAGE_DIRS:
        if module.startswith(package + "."):
            rest = module[len(package) + 1 :].split(".")
            return ROOT / directory / Path(*rest).with_suffix(".py")
    raise ValueError(module)


def _stage(modules: tuple[str, ...]) -> list[str]:
    """Copy the modules into a tree named like the installed package, so that
    mypyc names them ``sprintd.…`` (it names a module after its directories),
    with empty ``__init__`` files: nothing else of sprintd is compiled or checked."""
    shutil.rmtree(STAGE, ignore_errors=True)
    paths = []
    for module in modules:
        target = STAGE.joinpath(*module.split(".")).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_source(module), target)
        paths.append(str(target))
        for parent in target.relative_to(STAGE).parents:
            if parent != Path():
                (STAGE / parent / "__init__.py").touch()
    config = STAGE / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    return [f"--config-file={config}", *paths]


VERSION = runpy.run_path(str(ROOT / "daemon" / "version.py"))
MODULES: tuple[str, ...] = VERSION["COMPILED_MODULES"]
LIBRARY: str = VERSION["NATIVE_LIBRARY"]


def _pure(why: str) -> list[Any]:
    """No extensions, and none left in the source tree by an earlier plain
    editable install (which builds them in place): there, they would still be
    imported instead of the .py files beside them."""
    _say(f"{why}: installing the pure-Python engine")
    for module in (*MODULES, LIBRARY):
        source = _source(module)
        for suffix in EXTENSION_SUFFIXES:
            source.with_name(source.stem + suffix).unlink(missing_ok=True)
    return []


def _extensions() -> list[Any]:
    if os.environ.get("SPRINTD_COMPILE") != "1":
        return _pure("SPRINTD_COMPILE=1 is not set")
    if mypycify is None:
        return _pure("mypyc is not installed")
    try:
        extensions: list[Any] = mypycify(
            _stage(MODULES), group_name=LIBRARY.removesuffix("__mypyc"), target_dir=str(C_DIR)
        )
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        return _pure(f"mypyc cannot compile the engine ({exc})")
    return extensions


class BuildOrFallBack(build_ext):
    """build_ext that, when compiling fails, removes what it built and goes on
    without extensions: the .py modules are installed in any case."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, a missing compiler
            for built in self.get_outputs():
                Path(built).unlink(missing_ok=True)
            _pure(f"compiling the engine failed ({exc})")
            self.extensions = []
            self.distribution.ext_modules = []


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildOrFallBack})
