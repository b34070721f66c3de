# Two commands on a fresh machine:  `make demo`  (the offline end-to-end demo)  and  `make test`.
# Both create .venv and install what they need. torch/torchvision are pinned and installed first:
# an unpinned torchvision pulls a newer torch (see README, Install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench-latency clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/autoprune demo

test: $(STAMP)
	RAY_AUTH_MODE=disabled $(BIN)/pytest -q --durations=10

lint: $(STAMP)
	$(BIN)/ruff check autoprune tests benchmarks examples
	$(BIN)/ruff format --check autoprune tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format autoprune tests benchmarks examples
	$(BIN)/ruff check --fix autoprune tests benchmarks examples

bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.latency_predictor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
