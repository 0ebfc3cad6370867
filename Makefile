# sealpost developer entry points. `make test` is what CI runs (see .ci/run).
# Each target installs what it needs and no more: `make serve` the runtime dependencies
# only, `make test` (and `make venv`) the dev and postgres extras, `make bench` the bench
# extra on top.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP   := $(VENV)/.installed-run
DEV_STAMP   := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: venv test lint typecheck pytest bench bench-quick serve vectors clean

venv: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(DEV_STAMP) $(RUN_STAMP)

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,postgres]'
	touch $(BENCH_STAMP) $(DEV_STAMP) $(RUN_STAMP)

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: venv
	$(BIN)/mypy --strict src

pytest: venv
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(BENCH_STAMP)
	$(BIN)/python bench/crypto.py --json bench/results/crypto.json
	$(BIN)/python bench/client.py --json bench/results/client.json
	$(BIN)/python bench/relay.py --json bench/results/relay.json
	$(BIN)/python bench/groups.py --json bench/results/groups.json
	$(BIN)/python bench/transparency.py --json bench/results/transparency.json
	$(BIN)/python bench/app.py --json bench/results/app.json

bench-quick: $(BENCH_STAMP)
	$(BIN)/python bench/crypto.py --quick
	$(BIN)/python bench/client.py --quick
	$(BIN)/python bench/relay.py --quick
	$(BIN)/python bench/groups.py --quick
	$(BIN)/python bench/transparency.py --quick
	$(BIN)/python bench/app.py --quick --json bench/results/app-quick.json

# Regenerate tests/vectors/sealpost-v1.json (only when the wire format changes on purpose).
vectors: $(DEV_STAMP)
	$(BIN)/python scripts/gen_vectors.py tests/vectors/sealpost-v1.json

# Run a relay server on ./data (SQLite); it prints its URL. Settings: `sealpost server --help`.
# Runtime dependencies only: serving needs no test or benchmark tools.
serve: $(RUN_STAMP)
	$(BIN)/sealpost server --data ./data

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
