import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from app.config import settings
from app.db import get_read_connection, get_session
from app.db_routing import get_crew_read_connection, get_crew_snapshot_connection

SessionDep = Annotated[Session, Depends(get_session)]
# Run data and anything read together with it: the primary.
ReadConnectionDep = Annotated[Connection, Depends(get_read_connection)]
# Crew data (members, their history): the read replica when it may serve (app/db_routing.py).
CrewReadConnectionDep = Annotated[Connection, Depends(get_crew_read_connection)]

bearer = HTTPBearer(auto_error=False, description="Required when INGEST_API_TOKEN is set.")


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Guard write endpoints with INGEST_API_TOKEN, compared in constant time."""
    expected = settings.INGEST_API_TOKEN
    if expected is None:
        return
    supplied = credentials.credentials if credentials else ""
    if not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


WriteAccess = Depends(require_token)
T = TypeVar("T")


# Reads run their database part in worker threads, at most this many at once, in the order they
# came: more threads only take turns at the GIL in random order, which widens the latency tail.
READ_THREADS = 8
read_threads = anyio.CapacityLimiter(READ_THREADS)
read_turns = anyio.Semaphore(READ_THREADS)  # first come, first served; a wait can time out
read_connection = contextmanager(get_read_connection)
# Crew data: the replica when it may serve; history's several statements in one snapshot there.
crew_read_connection = contextmanager(get_crew_read_connection)
crew_snapshot_connection = contextmanager(get_crew_snapshot_connection)


async def in_read_thread(
    function: Callable[..., T],
    *args: Any,
    connect: Callable[[], AbstractContextManager[Connection]] = read_connection,
) -> T:
    """`function(connection, *args)` in a worker thread with a connection from `connect` (the
    primary's in autocommit by default, for a response of one statement; crew reads pass
    `crew_read_connection`, or `crew_snapshot_connection` for one REPEATABLE READ transaction):
    one thread hop per request (a sync endpoint with a generator dependency makes three). A
    read that waits longer than DB_POOL_TIMEOUT_SECONDS for its turn (the database is slow, the
    queue long) answers 503, like one that waits that long for a pooled connection."""

    def run() -> T:
        with connect() as connection:
            return function(connection, *args)

    with anyio.move_on_after(settings.DB_POOL_TIMEOUT_SECONDS) as waiting:
        await read_turns.acquire()
    if waiting.cancelled_caught:
        raise PoolTimeout(
            f"no read thread free within DB_POOL_TIMEOUT_SECONDS ({READ_THREADS} busy)"
        )
    try:  # threads of their own: a thread pool full of other work does not hold reads up
        return await anyio.to_thread.run_sync(run, limiter=read_threads)
    finally:
        read_turns.release()
