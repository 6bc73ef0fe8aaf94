# Two commands on a fresh machine with Python 3.11 and make:
#   make run    the bot (console on SQLite without credentials; Telegram with TELEGRAM_TOKEN)
#   make test   the test suite (SQLite; set TEST_DATABASE_URL for PostgreSQL)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PG_TEST_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.PHONY: run console test test-pg lint bench bench-install install lock clean

# Every dependency (dev tools too) at the version and hash pinned in requirements.lock, then
# the project itself without resolving anything (setuptools and wheel come from the lock).
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run: make PYTHON=python3 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m handlers.i18n
	touch $(STAMP)

install: $(STAMP)

# Re-resolve pyproject.toml's ranges (with [dev]) into requirements.lock, for Python 3.11 on
# Linux x86_64 (run it there); `make install` then installs the new pins. Then
# requirements-run.lock: the runtime dependencies only (and the build backend), at the same
# pins (started from requirements.lock), for the image (deploy/Dockerfile) and servers.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --extra dev --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	cp requirements.lock requirements-run.lock
	$(BIN)/pip-compile --quiet --generate-hashes --all-build-deps --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements-run.lock pyproject.toml

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

# The benchmarks' optional baselines (python-telegram-bot for bench_enrollment), pyproject's
# `bench` extra; not in requirements.lock: the product never imports them.
bench-install: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e '.[bench]'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
