# --- build: resolve dependencies from uv.lock into a virtualenv ---------------------------------
FROM python:3.12-slim-bookworm AS build
LABEL org.opencontainers.image.title="crew-etl"
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# README.md (the package's long description) comes after the dependency layer: editing it
# must not reinstall every dependency.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY README.md ./
COPY app ./app
RUN uv sync --frozen --no-default-groups --no-editable

# --- runtime: the virtualenv, the migrations, a non-root user; no build tools ------------------
# Settings first, the files last: a code change rebuilds only the final COPY.
FROM python:3.12-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="crew-etl"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
ENV PATH="/opt/venv/bin:$PATH" \
    ALEMBIC_CONFIG=/app/alembic.ini \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=2)"]
# exec: the service is PID 1 and receives SIGTERM itself (running ingests roll back) and exits 0
# once it has stopped. With WORKERS above 1 it starts through `serve`, which sets up the
# directory in which /metrics adds up every worker's metrics (and exits 143 after SIGTERM).
CMD ["sh", "-c", "if [ \"${WORKERS:-1}\" -gt 1 ]; then exec python -m app.cli serve --host \"$HOST\" --port \"$PORT\"; else exec uvicorn app.main:app --host \"$HOST\" --port \"$PORT\"; fi"]
COPY --chown=app:app alembic.ini ./
COPY --chown=app:app alembic ./alembic
COPY --from=build /opt/venv /opt/venv
