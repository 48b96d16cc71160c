"""One thread per process keeps its runs honest, every `heartbeat_seconds`:

- it proves each local run alive (`heartbeat_at`), and learns from the same statement which
  runs are no longer this process's (ended elsewhere) or were asked to cancel;
- it stops local runs past INGEST_RUN_TIMEOUT_SECONDS;
- it ends `failed` any run, of any process, whose owner has been silent longer than
  INGEST_STALE_AFTER_SECONDS (a killed, paused or partitioned process).

Stopping a run also cancels the statement its load connection is waiting on, so a run blocked
on a lock or a slow statement stops at once instead of at its next checkpoint.
"""

import threading
import time

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import settings
from app.ingest import registry, runs

log = structlog.get_logger("crew_etl.watchdog")


class Watchdog:
    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="run-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopping.wait(settings.heartbeat_seconds):
            try:
                tick()
            except (DBAPIError, PoolTimeout) as exc:  # the database is away: try next tick
                log.warning("watchdog could not reach the database", error=str(exc).split("\n")[0])
            except Exception:  # never let the loop die: runs depend on it
                log.exception("watchdog tick failed")


def tick() -> None:
    local = registry.local_runs()
    now = time.monotonic()
    for run in local:
        if now > run.deadline:
            registry.stop(run.run_id, timed_out(run))
    # A run that ignores its stop for longer than the stale window is left to be reaped.
    alive = [run for run in local if now < run.deadline + settings.INGEST_STALE_AFTER_SECONDS]
    if alive:
        ours = runs.heartbeat([run.run_id for run in alive])
        for run in alive:
            if run.run_id not in ours:
                registry.stop(run.run_id, f"run {run.run_id} was ended by another process")
            elif ours[run.run_id]:
                registry.stop(run.run_id, "cancelled on request", status="cancelled")
    cancel_statements_of_stopped_runs()
    runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS)
    runs.end_load_connections(None)


def timed_out(run: registry.LocalRun) -> str:
    limit = settings.INGEST_RUN_TIMEOUT_SECONDS
    return f"timed out: the run passed INGEST_RUN_TIMEOUT_SECONDS ({limit:g} s) on page {run.page}"


def cancel_statements_of_stopped_runs() -> None:
    """A run told to stop may be waiting on a statement (a lock, a slow query): cancel it, so
    the run sees its stop reason now rather than when the statement ends. Again every tick: a
    cancel that lands between two statements does nothing. The cancel request carries the load
    connection's own key: PostgreSQL, or PgBouncer in front of it, cancels only what that
    connection runs."""
    for run in registry.local_runs():
        connection = run.load_connection
        if run.stop_reason is None or connection is None:
            continue
        log.warning("cancelling the statement of a stopped run", run_id=run.run_id)
        try:
            connection.cancel()
        except Exception as exc:  # closed meanwhile: nothing left to cancel
            log.debug("cancel not sent", run_id=run.run_id, error=type(exc).__name__)


watchdog = Watchdog()
