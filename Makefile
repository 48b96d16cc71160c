# Everything runs through uv and the committed uv.lock. If uv is not installed, it is
# bootstrapped from PyPI into .tools/ with the Python found on PATH (3.11 or 3.12).
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
export UV_PYTHON_DOWNLOADS := never
RUN := $(UV) run --frozen

.PHONY: install run test lint bench migrate clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen

run: install  ## migrate, then serve on 127.0.0.1:8000 (embedded Postgres without DATABASE_URL)
	$(RUN) crew-etl migrate
	$(RUN) crew-etl serve --host 127.0.0.1 --port 8000

test: install  ## the whole suite against a real PostgreSQL
	$(RUN) pytest $(PYTEST_ARGS)

lint: install
	$(RUN) ruff check app tests alembic bench
	$(RUN) ruff format --check app tests alembic bench
	$(RUN) mypy

bench: install  ## N records (default 200000) through the real ingest path, plus read load
	$(RUN) python -m bench.run --records $(or $(N),200000)

migrate: install
	$(RUN) crew-etl migrate

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache .mypy_cache
