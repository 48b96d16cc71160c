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
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint bench migrate ingest runs psql reset demo compose-smoke clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen

run: install  ## migrate, then serve on http://$(HOST):$(PORT) (embedded Postgres without DATABASE_URL)
	$(RUN) crew-etl migrate
	$(RUN) crew-etl serve --host $(HOST) --port $(PORT)

test: install  ## the whole suite against a real PostgreSQL
	$(RUN) pytest $(PYTEST_ARGS)

lint: install
	$(RUN) ruff check app tests alembic bench demo
	$(RUN) ruff format --check app tests alembic bench demo
	$(RUN) mypy

bench: install  ## N records (default 200000) through the real ingest path, plus read load
	$(RUN) --group bench python -m bench.run --records $(or $(N),200000) $(BENCH_ARGS)

migrate: install  ## alembic upgrade head on the configured database
	$(RUN) crew-etl migrate

ingest: install  ## one ingest run now from SPACEX_API_URL, with progress and a summary
	$(RUN) crew-etl ingest

runs: install  ## the most recent ingest runs
	$(RUN) crew-etl runs

psql: install  ## psql on the configured database (embedded included); SQL="..." runs one statement
	$(RUN) crew-etl psql $(if $(SQL),--command "$$SQL")

reset: install  ## delete the embedded database (asks first); the next start begins empty
	$(RUN) crew-etl reset

demo: install  ## offline: stand-in upstream with the recorded snapshot, the service, one ingest
	$(RUN) python -m demo --host $(HOST) --port $(PORT) $(DEMO_ARGS)

# Needs a Docker engine (DOCKER_HOST); skipped with the reason when none answers. No conftest:
# these tests talk to containers only, so no PostgreSQL is started on the host.
compose-smoke: install  ## build the image, run docker-compose.yml and walk a user's journey
	$(RUN) pytest --noconftest -m container tests/container $(PYTEST_ARGS)

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache .mypy_cache
