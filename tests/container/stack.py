"""Drive a Docker engine and a compose project from the smoke test; no assertions here.

Works with whatever engine `DOCKER_HOST` (or the default socket) points at, with `docker compose`
(v2) when the CLI has it, else `docker-compose` (v1). Containers are found by the labels both
compose versions put on them, so the same queries work with either.
"""

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
OVERRIDE = Path(__file__).with_name("compose.smoke.yml")
EMPTY_ENV = Path(__file__).with_name("empty.env")  # instead of a developer's .env
LABEL = "com.docker.compose.project"


class StackError(RuntimeError):
    pass


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a command in the project directory; its stdout, or StackError with its output."""
    result = subprocess.run(
        args, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise StackError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result.stdout


def engine_problem() -> str | None:
    """Why no container test can run here, or None when an engine and compose answer."""
    if shutil.which("docker") is None:
        return "no `docker` CLI on PATH"
    try:
        run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except (StackError, subprocess.TimeoutExpired) as exc:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        detail = " ".join(str(exc).split())[-300:]
        return f"no Docker engine answers at {where} ({detail})"
    if not compose_command():
        return "neither `docker compose` (v2) nor `docker-compose` is installed"
    return None


def compose_command() -> list[str]:
    """`docker compose` when the CLI has the v2 plugin, else `docker-compose`, else []."""
    try:
        run(["docker", "compose", "version"], timeout=20)
        return ["docker", "compose"]
    except (StackError, subprocess.TimeoutExpired):
        return ["docker-compose"] if shutil.which("docker-compose") else []


def compose_environment(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any variable the compose file reads, plus `settings`:
    a developer's exported INGEST_API_TOKEN or API_PORT must not change what the test sees."""
    text = (PROJECT / "docker-compose.yml").read_text() + OVERRIDE.read_text()
    read = set(re.findall(r"\$\{(\w+)", text))
    return {k: v for k, v in os.environ.items() if k not in read} | settings


@dataclass
class Stack:
    """One compose project: the real docker-compose.yml plus the smoke override."""

    project: str
    settings: dict[str, str]
    command: list[str] = field(default_factory=compose_command)

    def compose(self, *args: str, timeout: float = 300, **more: str) -> str:
        files = ["-f", "docker-compose.yml", "-f", str(OVERRIDE.relative_to(PROJECT))]
        env_file = ["--env-file", str(EMPTY_ENV.relative_to(PROJECT))]
        return run(
            [*self.command, "-p", self.project, *env_file, *files, *args],
            # docker-compose v1 gives up on a slow engine after 60 s (vfs copies every layer)
            env=compose_environment({"COMPOSE_HTTP_TIMEOUT": "600"} | self.settings | more),
            timeout=timeout,
        )

    def containers(self, service: str | None = None) -> list[str]:
        """Ids of the project's containers (of one service), running or not."""
        filters = ["--filter", f"label={LABEL}={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return run(["docker", "ps", "-aq", "--no-trunc", *filters]).split()

    def state(self, service: str) -> dict[str, object]:
        """`docker inspect`'s State of the service's one container."""
        (container,) = self.containers(service)
        return dict(
            json.loads(run(["docker", "inspect", "--format", "{{json .State}}", container]))
        )

    def wait_healthy(self, service: str, give_up_after: float = 180) -> None:
        """Until the container's own healthcheck says healthy; StackError if it never does."""
        deadline = time.monotonic() + give_up_after
        while time.monotonic() < deadline:
            state = self.state(service)
            health = state.get("Health") or {}
            assert isinstance(health, dict)
            if health.get("Status") == "healthy":
                return
            if state.get("Status") == "exited" or health.get("Status") == "unhealthy":
                break
            time.sleep(1)
        logs = self.compose("logs", "--no-color", "--tail", "40", service)
        raise StackError(f"{service} did not become healthy: {self.state(service)}\n{logs}")

    def psql(self, sql: str) -> str:
        """One query as the database owner inside the db container; unaligned output."""
        user, db = self.settings["POSTGRES_USER"], self.settings["POSTGRES_DB"]
        return self.compose("exec", "-T", "db", "psql", "-U", user, "-d", db, "-Atc", sql).strip()

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = ["--filter", f"label={LABEL}={self.project}"]
        return {
            "containers": self.containers(),
            "networks": run(["docker", "network", "ls", "-q", *label]).split(),
            "volumes": run(["docker", "volume", "ls", "-q", *label]).split(),
        }
