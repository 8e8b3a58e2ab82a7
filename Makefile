# pipebot: `make run` starts the product, `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest bench migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pipebot migrate
	$(BIN)/pipebot demo

migrate: $(STAMP)
	$(BIN)/pipebot migrate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# One pytest run covers SQLite and PostgreSQL: storage and engine tests are
# parametrized over both (TEST_DATABASE_URL points at the PostgreSQL server).
pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/ack.py
	$(BIN)/python benchmarks/notifier.py --pipelines 100 --changed 10

clean:
	rm -rf $(VENV) .pipebot .mypy_cache .ruff_cache .pytest_cache
