"""The runs this process is executing, shared by their threads, the watchdog and the signal
handlers: each run's deadline, its load connection and why it must stop.

`OWNER_ID` is stamped on every run this process creates; the run record only changes while it
still names this owner (see app/ingest/runs.py).
"""

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

OWNER_ID = secrets.randbits(62)


@dataclass
class LocalRun:
    run_id: int
    deadline: float  # time.monotonic() past which the run must stop
    # the load connection (psycopg2's), whose statement the watchdog cancels when the run must
    # stop: with the connection's own cancel key, which reaches no other client's work
    load_connection: Any = None
    page: int = 1  # the page it is on, for the error when it times out
    stop_reason: str | None = None  # set once; the run stops, rolls back and ends with it
    stop_status: str = "failed"


_runs: dict[int, LocalRun] = {}
_lock = threading.RLock()  # reentrant: signal handlers take it on the thread they interrupt
_stopping: str | None = None  # the process is shutting down: runs that start now stop at once


def register(run_id: int, timeout_seconds: float) -> LocalRun:
    with _lock:
        run = LocalRun(run_id, time.monotonic() + timeout_seconds)
        _runs[run_id] = run
        if _stopping is not None:  # read after the insert: a signal may have come in between
            stop(run_id, _stopping)
        return run


def unregister(run_id: int) -> None:
    with _lock:
        _runs.pop(run_id, None)


def local_runs() -> list[LocalRun]:
    with _lock:
        return list(_runs.values())


def stop(run_id: int, reason: str, status: str = "failed") -> bool:
    """Ask a local run to stop; the first reason given is the one recorded. True if it is new."""
    with _lock:
        run = _runs.get(run_id)
        if run is None or run.stop_reason is not None:
            return False
        run.stop_reason, run.stop_status = reason, status
        return True


def stop_all(reason: str, and_later_ones: bool = False) -> None:
    """Stop every local run, and with `and_later_ones` any that starts from now on (the process
    received a signal and is going away)."""
    global _stopping
    if and_later_ones:
        _stopping = _stopping or reason
    for run in local_runs():
        stop(run.run_id, reason)


def accept_runs() -> None:
    """Let runs start again (an app started again in the same process)."""
    global _stopping
    _stopping = None


def find(run_id: int) -> LocalRun | None:
    with _lock:
        return _runs.get(run_id)


def wait_until_idle(timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while _runs and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _runs
