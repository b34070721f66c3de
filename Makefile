# Two commands on a fresh machine:  `make demo`  (the offline end-to-end demo)  and  `make test`.
# Both create .venv and install what they need. torch/torchvision are pinned and installed first:
# an unpinned torchvision pulls a newer torch (see README, Install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck format bench-latency clean postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/autoprune demo

CODE := autoprune tests benchmarks examples scripts
DOCTESTS := autoprune/policy.py autoprune/budget.py autoprune/registry.py autoprune/config.py \
	autoprune/search/fidelity.py autoprune/search/_base.py autoprune/search/baselines.py \
	autoprune/records.py autoprune/hardware/profiler.py autoprune/search/storage.py

# What CI runs: lint, type checks (strict on the torch-free core), doctests and the test suite.
# The cluster tests start a real PostgreSQL server: its Debian package is installed if missing.
test: lint typecheck postgres
	RAY_AUTH_MODE=disabled $(BIN)/pytest -q --durations=10 --doctest-modules tests $(DOCTESTS)

postgres:
	@sh scripts/ensure_postgres.sh

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.latency_predictor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
