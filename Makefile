# The two commands the README promises, and the pieces they are made of.
#   make run    install sprintd and start it on its embedded default
#   make test   install what the tests need (Redis, PostgreSQL, promtool) and run them all

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test system-deps venv lint typecheck pytest install-check bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { tests/system-deps.sh venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

run: venv
	$(BIN)/pip install -q .
	$(BIN)/sprintd run $(ARGS)

system-deps:
	tests/system-deps.sh

# strict editable mode: mypy cannot see through the default import-hook finder.
test: system-deps venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	$(MAKE) --no-print-directory lint typecheck install-check pytest

lint:
	$(BIN)/ruff check daemon plugins tests bench
	$(BIN)/ruff format --check daemon plugins tests bench

typecheck:
	$(BIN)/mypy -p sprintd

# Both ways a user installs, each into a throwaway venv, each started for real
# from outside the repository: the package mapping, the package data (tier
# profiles, py.typed) and the console script all ship, and the daemon answers
# /health. (The suite itself runs on the strict editable install, for mypy.)
install-check:
	for mode in "." "-e ."; do \
	  rm -rf build/install-check && $(PYTHON) -m venv build/install-check && \
	  build/install-check/bin/pip install -q $$mode && \
	  (cd build && install-check/bin/sprintd --version && install-check/bin/sprintd tiers > /dev/null && \
	   install-check/bin/python -c "import importlib.resources as r; assert r.files('sprintd').joinpath('py.typed').is_file()" && \
	   install-check/bin/python ../tests/smoke.py) || exit 1; \
	done

pytest:
	$(BIN)/pytest $(ARGS)

bench: venv
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=strict
	$(BIN)/python -m bench.serving $(ARGS)
