# The two commands the README promises, and the pieces they are made of.
#   make run    install sprintd and start it on its embedded default
#   make test   install what the tests need (Redis, PostgreSQL, promtool) and run them all

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test system-deps venv lint typecheck pytest install-check test-compiled bench

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
# The suite runs on the pure-Python build (the default): the reference, and
# the one whose source edits take effect (a compiled module would be imported
# instead of its .py). test-compiled then runs the compiled build.
test: system-deps venv
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	$(MAKE) --no-print-directory lint typecheck install-check pytest test-compiled

lint:
	$(BIN)/ruff check daemon plugins tests bench
	$(BIN)/ruff format --check daemon plugins tests bench

typecheck:
	$(BIN)/mypy -p sprintd

# Both ways a user installs, each into a throwaway venv, each started for real
# from outside the repository: the package mapping, the package data (tier
# profiles, py.typed) and the console script all ship, and the daemon answers
# /health. (The suite itself runs on the strict editable install, for mypy.)
# The plain install is the default, pure Python; the editable one asks for the
# compiled build (SPRINTD_COMPILE=1) with a C compiler that fails (CC=false):
# it must fall back to pure Python and still install. test-compiled makes the
# compiled plain install.
install-check:
	# No compiled objects from an earlier build: the failing compiler must run.
	rm -rf build/lib.* build/temp.*
	for case in "pure Python::." "pure Python:SPRINTD_COMPILE=1 CC=false:-e ."; do \
	  build=$${case%%:*}; rest=$${case#*:}; cc=$${rest%%:*}; mode=$${rest#*:}; \
	  rm -rf build/install-check && $(PYTHON) -m venv build/install-check && \
	  env $$cc build/install-check/bin/pip install -q $$mode && \
	  (cd build && install-check/bin/sprintd --version | tr '\n' ' ' | grep "$$build" && \
	   install-check/bin/sprintd tiers > /dev/null && \
	   install-check/bin/python -c "import importlib.resources as r; assert r.files('sprintd').joinpath('py.typed').is_file()" && \
	   install-check/bin/python ../tests/smoke.py) || exit 1; \
	done

pytest:
	EXPECTED_BUILD=pure $(BIN)/pytest $(ARGS)

# The compiled build (setup.py compiles the engine and framing with mypyc),
# installed the way a user does, with the tests of what it compiles and of the
# orders plugin on top of it, and tests/test_compiled.py, which holds it to the
# pure-Python source. The whole suite twice would double make test's time.
COMPILED       := build/compiled
COMPILED_TESTS := tests/test_compiled.py tests/test_engine.py tests/test_framing.py \
                  tests/test_fuzz_framing.py tests/test_framed.py tests/test_framed_daemon.py \
                  tests/test_fuzz_orders.py tests/test_orders.py tests/test_orders_service.py \
                  tests/test_orders_durability.py tests/test_orders_feed.py \
                  tests/test_orders_render.py tests/test_orders_metrics.py tests/test_health.py

$(COMPILED)/bin/python:
	$(PYTHON) -m venv $(COMPILED)

test-compiled: $(COMPILED)/bin/python
	SPRINTD_COMPILE=1 $(COMPILED)/bin/pip install -q '.[test]'
	EXPECTED_BUILD=compiled $(COMPILED)/bin/pytest -p no:cacheprovider $(COMPILED_TESTS)

bench: venv
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=strict
	$(BIN)/python -m bench.serving $(ARGS)
