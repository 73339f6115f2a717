"""``python -m bench.fuzz TARGET [atheris/libFuzzer flags]``: fuzz one parser with atheris.

atheris is optional (``pip install -e '.[fuzz]'``) and this is never run in
CI: the bounded hypothesis suites (tests/test_fuzz_*.py) are. Examples::

    python -m bench.fuzz json -max_total_time=60
    python -m bench.fuzz journal -runs=100000 corpus/journal/

A crash writes ``crash-<hash>`` with the input in the working directory.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from bench.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: python -m bench.fuzz {{{','.join(TARGETS)}}} [libFuzzer flags]")
        sys.exit(2)
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
