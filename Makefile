# PlaneSSL: `make demo` runs the main job on its embedded default (synthetic cohorts);
# `make test` runs the test suite. Both set themselves up (scripts/bootstrap.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/planessl demo --out $(OUT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q Testing $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

bench: setup
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
