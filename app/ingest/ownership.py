"""Which process owns a run, so a starting replica fails only runs whose process is gone.

Each process that creates runs holds a session-level advisory lock on a random key for its whole
life, on a connection of its own, and stamps that key on its runs as `owner_id`. PostgreSQL drops
the lock when the process dies (even by SIGKILL), so "can I take the owner's lock?" means "is the
owner dead?".
"""

import secrets
import threading

from sqlalchemy import Connection, Engine, text

from app.models import ACTIVE_RUN_STATUSES

INTERRUPTED = "interrupted: the process running this run stopped before it finished"


class ProcessLease:
    def __init__(self) -> None:
        self.owner_id = secrets.randbits(62)
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def hold(self, engine: Engine) -> int:
        """Take the lease once per process (idempotent) and return the owner id."""
        with self._lock:
            if self._connection is None or self._connection.closed:
                connection = engine.connect()
                connection.detach()  # its own session: closing must end it, not pool it
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.owner_id})
                connection.commit()
                self._connection = connection
        return self.owner_id

    def release(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()  # closing the session frees the lock
                self._connection = None


lease = ProcessLease()


def fail_orphaned_runs(engine: Engine) -> list[int]:
    """Mark `failed` every queued or running run whose owning process no longer exists."""
    failed: list[int] = []
    with engine.connect() as connection:
        runs = connection.execute(
            text("SELECT id, owner_id FROM ingest_runs WHERE status = ANY(:active)"),
            {"active": [str(status) for status in ACTIVE_RUN_STATUSES]},
        ).all()
        for run_id, owner_id in runs:
            if owner_is_dead(connection, owner_id) and mark_interrupted(connection, run_id):
                failed.append(run_id)
        connection.commit()
    return failed


def owner_is_dead(connection: Connection, owner_id: int | None) -> bool:
    if owner_id is None:
        return True
    taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": owner_id})
    if not taken.scalar_one():
        return False
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": owner_id})
    return True


def mark_interrupted(connection: Connection, run_id: int) -> bool:
    result = connection.execute(
        text(
            "UPDATE ingest_runs SET status = 'failed', error = :error, finished_at = now() "
            "WHERE id = :id AND status IN ('queued', 'running')"
        ),
        {"id": run_id, "error": INTERRUPTED},
    )
    return result.rowcount == 1
