# pipebot: `make run` starts the product, `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run` installs what running needs (the package and its dependencies); the targets
# that check the code (lint, typecheck, the tests, benchmarks, screenshots) add the `dev`
# extra (pytest, mypy, ruff, Playwright, moto...). Each stamp is redone when pyproject.toml
# changes; installing `dev` satisfies `run` too.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

CHROMIUM ?= /usr/bin/chromium

.PHONY: run sandbox test lint typecheck pytest reliability bench screenshots migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

# No Slack credentials: the sandbox (a local stand-in for Slack in the browser). With
# SLACK_BOT_TOKEN: the real Slack app (Socket Mode with SLACK_APP_TOKEN, else HTTP). Both
# migrate the database first (serve unless PIPEBOT_MIGRATE_ON_START=false), so no separate
# `pipebot migrate` here: it would only say the same thing twice.
run: $(RUN_STAMP)
	@if [ -n "$${SLACK_BOT_TOKEN:-}" ]; then \
		exec $(BIN)/pipebot serve; \
	else \
		exec $(BIN)/pipebot sandbox; \
	fi

sandbox: $(RUN_STAMP)
	$(BIN)/pipebot sandbox

# The browser test drives Debian's Chromium (never a downloaded browser build).
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji

# The README's screenshots, taken by the browser test (which otherwise keeps them in a temp dir).
screenshots: $(DEV_STAMP) $(CHROMIUM)
	PIPEBOT_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q -p no:cacheprovider \
		tests/test_browser.py

migrate: $(RUN_STAMP)
	$(BIN)/pipebot migrate

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# One pytest run covers SQLite and PostgreSQL: storage and engine tests are
# parametrized over both (TEST_DATABASE_URL points at the PostgreSQL server).
# The reliability suite (marker `reliability`) runs in its own target, below.
pytest: $(DEV_STAMP) $(CHROMIUM)
	$(BIN)/pytest -q -p no:cacheprovider -m "not reliability"

# Crashes (kill -9), two processes on one PostgreSQL, Slack and AWS faults, fuzzing, security
# and load (README, Reliability): about 10 minutes on 2 cores. Prints the figures at the end.
RELIABILITY_FIGURES ?= $(CURDIR)/.pipebot/reliability-figures.jsonl
reliability: $(DEV_STAMP)
	@mkdir -p $(dir $(RELIABILITY_FIGURES))
	@rm -f $(RELIABILITY_FIGURES)
	PIPEBOT_RELIABILITY_FIGURES=$(RELIABILITY_FIGURES) $(BIN)/pytest -q -p no:cacheprovider \
		-m reliability --timeout=900 tests
	$(BIN)/python -m reliability.report $(RELIABILITY_FIGURES)

test: lint typecheck pytest reliability

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/ack.py
	$(BIN)/python benchmarks/notifier.py --pipelines 100 --changed 10

clean:
	rm -rf $(VENV) .pipebot .mypy_cache .ruff_cache .pytest_cache
