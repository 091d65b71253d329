# The two commands of the README: `make demo` and `make test`. Each does all its own set-up:
# a virtual environment with the Python dependencies, the Kafka jars (Maven Central, cached in
# ~/.cache/salesflow), MariaDB (Debian's package, when missing and root), and the services.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-crash unit lint stack-up stack-down bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

stack-up: $(STAMP)
	$(BIN)/salesflow stack up --mysql

stack-down: $(STAMP)
	$(BIN)/salesflow stack down

demo: $(STAMP)
	$(BIN)/salesflow demo

test: stack-up
	$(BIN)/pytest

# Only the kill -9 and rebalance tests of the aggregates (part of `make test` too).
test-crash: stack-up
	$(BIN)/pytest -m crash

unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .

bench: stack-up
	$(BIN)/python benchmarks/produce.py

clean:
	-$(BIN)/salesflow stack down
	rm -rf $(VENV) .pytest_cache .ruff_cache
