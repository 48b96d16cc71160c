# Everything runs through uv and the committed uv.lock. If uv is not installed, it is
# bootstrapped from PyPI into .tools/ with the Python found on PATH (3.11 or 3.12).
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := .tools/bin/uv
endif
export UV_PYTHON_DOWNLOADS := never
# Bytecode is compiled once at install: where PYTHONDONTWRITEBYTECODE is set (as on some CI
# machines) every process would otherwise compile FastAPI, SQLAlchemy and pydantic from source,
# about a second of CPU per start of the service, a command or a test worker.
export UV_COMPILE_BYTECODE := 1
# --no-sync: the targets below install what they need first; a plain `uv run` would install the
# default groups (the dev tools) again.
RUN := $(UV) run --frozen --no-sync
# --inexact: a checkout that has the dev tools keeps them when it runs the service
SYNC := $(UV) sync --frozen --inexact --quiet
HOST ?= 127.0.0.1
PORT ?= 8000
# Parallel test workers (pytest-xdist; auto: two per core); 0 runs the suite in one process.
# Not WORKERS: that is the service's setting, which the tests' servers would inherit.
TEST_WORKERS ?= auto

.PHONY: install runtime dev docs docs-build run test lint bench migrate ingest runs psql reset demo \
	compose-smoke clean

$(UV):
	@$(PYTHON) -m venv .tools
	@.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)  ## everything: the service, the embedded PostgreSQL, the dev tools
	$(UV) sync --frozen

# What serving needs (the embedded PostgreSQL included), nothing of the dev tools.
runtime: $(UV)
	@$(SYNC) --no-default-groups --group embedded

dev: $(UV)
	@$(SYNC) --group dev --group embedded

run: runtime  ## serve on http://$(HOST):$(PORT), migrating first (embedded Postgres without DATABASE_URL)
	@$(RUN) crew-etl serve --host $(HOST) --port $(PORT)

# The project's modules are compiled first too: the suite starts a few hundred processes.
# worksteal: a worker that runs out of tests takes some of another's, so the slow tests at the
# end of one worker's share do not leave the other cores idle (212 s against 219 to 234).
test: dev  ## the whole suite against a real PostgreSQL, in parallel; prints its wall time
	@start=$$(date +%s); status=0; \
	$(RUN) python -m compileall -q app demo tests >/dev/null; \
	$(RUN) pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal) $(PYTEST_ARGS) || status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time"; exit $$status

lint: dev
	$(RUN) ruff check app tests alembic bench demo docs
	$(RUN) ruff format --check app tests alembic bench demo docs
	$(RUN) mypy

bench: dev  ## N records (default 200000) through the real ingest path, plus read load
	@$(SYNC) --group dev --group embedded --group bench
	$(RUN) python -m bench.run --records $(or $(N),200000) $(BENCH_ARGS)

# The commands below print their own errors in one line: `@` keeps make from echoing them.
migrate: runtime  ## alembic upgrade head on the configured database
	@$(RUN) crew-etl migrate

ingest: runtime  ## one ingest run now from SPACEX_API_URL, with progress and a summary
	@$(RUN) crew-etl ingest

runs: runtime  ## the most recent ingest runs
	@$(RUN) crew-etl runs

psql: runtime  ## psql on the configured database (embedded included); SQL="..." runs one statement
	@$(RUN) crew-etl psql $(if $(SQL),--command "$$SQL")

reset: runtime  ## delete the embedded database (asks first); the next start begins empty
	@$(RUN) crew-etl reset

demo: runtime  ## offline: stand-in upstream with the recorded snapshot, the service, one ingest
	@$(RUN) python -m demo --host $(HOST) --port $(PORT) $(DEMO_ARGS)

docs: $(UV)  ## the documentation site on http://127.0.0.1:8001 (mkdocs serve)
	@$(SYNC) --group docs
	$(RUN) mkdocs serve --dev-addr 127.0.0.1:$(or $(DOCS_PORT),8001)

docs-build: $(UV)  ## the site into site/, failing on any warning (a broken link, a page left out)
	@$(SYNC) --group docs
	$(RUN) mkdocs build --strict

# Needs a Docker engine (DOCKER_HOST); skipped with the reason when none answers. No conftest:
# these tests talk to containers only, so no PostgreSQL is started on the host.
compose-smoke: dev  ## build the image, run docker-compose.yml and walk a user's journey
	$(RUN) pytest --noconftest -m container tests/container $(PYTEST_ARGS)

clean:
	rm -rf .venv .tools .pytest_cache .ruff_cache .mypy_cache
