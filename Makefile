# sealpost developer entry points. `make test` is what CI runs (see .ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest bench bench-quick serve vectors clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,postgres]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: venv
	$(BIN)/mypy --strict src

pytest: venv
	$(BIN)/pytest

test: lint typecheck pytest

bench: venv
	$(BIN)/python bench/crypto.py --json bench/results/crypto.json
	$(BIN)/python bench/client.py --json bench/results/client.json
	$(BIN)/python bench/relay.py --json bench/results/relay.json
	$(BIN)/python bench/groups.py --json bench/results/groups.json
	$(BIN)/python bench/transparency.py --json bench/results/transparency.json

bench-quick: venv
	$(BIN)/python bench/crypto.py --quick
	$(BIN)/python bench/client.py --quick
	$(BIN)/python bench/relay.py --quick
	$(BIN)/python bench/groups.py --quick
	$(BIN)/python bench/transparency.py --quick

# Regenerate tests/vectors/sealpost-v1.json (only when the wire format changes on purpose).
vectors: venv
	$(BIN)/python scripts/gen_vectors.py tests/vectors/sealpost-v1.json

# Run a relay server on ./data (SQLite); it prints its URL. Settings: `sealpost server --help`.
serve: venv
	$(BIN)/sealpost server --data ./data

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
