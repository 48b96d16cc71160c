"""Where crew reads go: the read replica (DATABASE_READ_URL) while it is up and close enough
behind the primary, else the primary. Writes, run records and the status page's run data
never come here: they use app/db.py's engines on the primary.

A thread per process measures the replica's lag every LAG_CHECK_SECONDS. A read uses the
replica only if the last measurement is fresh, the replica answered and its lag is at most
READ_MAX_LAG_SECONDS; a replica that refuses a connection is passed over at once. Each read
takes its validators (ETag, Last-Modified) and its body from the same server, so a response
from a lagging replica carries the validators of the state it shows, never newer ones.
"""

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import metrics
from app.config import settings
from app.db import autocommit_connection, get_engine, make_engine, snapshot_connection

log = structlog.get_logger("crew_etl.db")

LAG_CHECK_SECONDS = 1.0
# Older than this, a measurement says nothing: the checking thread is stuck, as the replica is.
FRESH_SECONDS = 5 * LAG_CHECK_SECONDS

# How far behind the primary the replica's data is. Nothing to replay and a WAL receiver
# streaming: caught up (lag 0), however long ago the primary last wrote. Otherwise the age of
# the newest transaction it replayed (its WAL not flowing, or replay behind what arrived). A
# standby promoted to primary is no longer behind anything.
LAG = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
         AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
    ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()),
                  'Infinity')
END::float8
"""


@dataclass(frozen=True)
class ReplicaState:
    lag_seconds: float | None  # None: not measured, or the replica did not answer
    problem: str | None  # why reads go to the primary instead, if they do
    measured_at: float  # time.monotonic()

    def serves_reads(self) -> bool:
        fresh = time.monotonic() - self.measured_at <= FRESH_SECONDS
        return fresh and self.problem is None


NOT_MEASURED = ReplicaState(None, "replica lag not measured yet", 0.0)
_state = NOT_MEASURED
_started = threading.Lock()
_thread: threading.Thread | None = None


def replica_configured() -> bool:
    return settings.DATABASE_READ_URL is not None


@functools.cache
def replica_engine() -> Engine:
    """Crew reads on the replica: the same pool and timeouts as the primary's API engine."""
    assert settings.DATABASE_READ_URL is not None
    return make_engine(
        40,
        10,
        statement_timeout=settings.DB_STATEMENT_TIMEOUT_SECONDS,
        url=settings.DATABASE_READ_URL,
    )


@functools.cache
def lag_engine() -> Engine:
    """Lag checks: a fresh connection each time, short timeouts (as the readiness probe's)."""
    assert settings.DATABASE_READ_URL is not None
    return make_engine(0, 0, statement_timeout=1, connect_timeout=2, url=settings.DATABASE_READ_URL)


def measure() -> ReplicaState:
    now = time.monotonic()
    try:
        with lag_engine().connect() as connection:
            lag = float(connection.exec_driver_sql(LAG).scalar_one())
    except (DBAPIError, PoolTimeout) as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        return ReplicaState(None, f"replica unreachable ({cause})", now)
    limit = settings.READ_MAX_LAG_SECONDS
    problem = f"replica lags {lag:.1f} s, more than READ_MAX_LAG_SECONDS ({limit:g})"
    return ReplicaState(lag, problem if lag > limit else None, now)


def check_once() -> ReplicaState:
    global _state
    previous, _state = _state, measure()
    if (previous.problem is None) != (_state.problem is None):
        log.warning(
            "crew reads moved",
            to="replica" if _state.problem is None else "primary",
            reason=_state.problem,
        )
    metrics.observe_replica(_state.lag_seconds, _state.problem is None)
    return _state


def _check_forever() -> None:
    while replica_configured():  # a test may unset it again
        try:
            check_once()
        except Exception:  # never let the thread die: reads would stay on a stale verdict
            log.exception("replica lag check failed")
        time.sleep(LAG_CHECK_SECONDS)


def ensure_monitor() -> None:
    """Start this process's lag checks (once; after a fork, again in the child)."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    with _started:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_check_forever, name="replica-lag", daemon=True)
            _thread.start()


def replica_state() -> ReplicaState:
    return _state


def crew_read_engine() -> Engine:
    """The replica if it may serve reads now, else the primary."""
    if not replica_configured():
        return get_engine()
    ensure_monitor()
    return replica_engine() if _state.serves_reads() else get_engine()


def get_crew_read_connection() -> Iterator[Connection]:
    """An autocommit connection for a crew read: the replica's, or the primary's when the
    replica should not serve (or refuses the connection)."""
    yield from crew_connection(autocommit)


def get_crew_snapshot_connection() -> Iterator[Connection]:
    """As get_crew_read_connection, in one REPEATABLE READ read-only transaction."""
    yield from crew_connection(snapshot)


def crew_connection(
    open_on: Callable[[Engine], contextlib.AbstractContextManager[Connection]],
) -> Iterator[Connection]:
    global _state
    engine = crew_read_engine()
    with contextlib.ExitStack() as stack:
        try:
            connection = stack.enter_context(open_on(engine))
        except (DBAPIError, PoolTimeout) as exc:
            if engine is get_engine():
                raise
            # gone since the last check: pass it over until the next one says otherwise
            _state = ReplicaState(
                None, f"replica unreachable ({type(exc).__name__})", time.monotonic()
            )
            connection = stack.enter_context(open_on(get_engine()))
        yield connection


autocommit = contextlib.contextmanager(autocommit_connection)
snapshot = contextlib.contextmanager(snapshot_connection)
