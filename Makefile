# Two commands on a fresh machine with Python 3.11 and make:
#   make run    the bot (console on SQLite without credentials; Telegram with TELEGRAM_TOKEN)
#   make test   the test suite (SQLite; set TEST_DATABASE_URL for PostgreSQL)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PG_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: run console test test-pg lint bench install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run: make PYTHON=python3 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/sertakan run

console: $(STAMP)
	$(BIN)/sertakan console

test: $(STAMP)
	$(BIN)/python -m pytest

test-pg: $(STAMP)
	TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.bench_enrollment --users 300

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
