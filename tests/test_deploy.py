"""The Docker image and compose stack, checked without a Docker engine (none runs here)."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
DOCKERFILE = (PROJECT / "Dockerfile").read_text()


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    result: dict[str, list[str]] = {}
    current = ""
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1]
            result[current] = []
        result[current].append(line)
    return result


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((PROJECT / "docker-compose.yml").read_text()))


def test_image_is_multi_stage_slim_and_locked() -> None:
    build, runtime = stages()["build"], stages()["runtime"]
    assert "uv sync --frozen --no-default-groups" in " ".join(build)
    assert runtime[0].startswith("FROM python:3.12-slim")
    assert not any("uv" in line.split() or "apt-get" in line for line in runtime)
    assert "COPY --from=build /opt/venv /opt/venv" in runtime


def test_image_runs_uvicorn_as_non_root_with_a_healthcheck() -> None:
    runtime = stages()["runtime"]
    user = next(line for line in runtime if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("root", "0")
    healthcheck = next(line for line in runtime if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    command = next(line for line in runtime if line.startswith("CMD "))
    assert "exec uvicorn app.main:app" in command
    assert all(f"${name}" in command for name in ("HOST", "PORT", "WORKERS"))


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (PROJECT / ".dockerignore").read_text().split()
    assert {".venv", ".data", "tests", ".git"} <= set(ignored)


def test_compose_orders_db_then_migrate_then_api() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "migrate", "api"}
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["api"]["ports"] == ["${API_PORT:-8000}:8000"]
    environment = services["api"]["environment"]
    assert {"DATABASE_URL", "INGEST_API_TOKEN"} <= set(environment)


def test_env_example_names_every_setting_compose_reads() -> None:
    example = (PROJECT / ".env.example").read_text()
    names = {line.split("=")[0] for line in example.splitlines() if "=" in line}
    assert {"POSTGRES_PASSWORD", "INGEST_API_TOKEN", "SPACEX_API_URL", "LOG_FORMAT"} <= names


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_validates() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(
        Path(__import__("sys").executable).parent / "hadolint"
    )
    result = subprocess.run([hadolint, "Dockerfile"], cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
