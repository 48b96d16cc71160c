"""A pooled connection whose server session ended is replaced at checkout, without a ping."""

import time

from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from app.db import get_engine


def backend_pid(connection: Connection) -> int:
    return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def terminate(pid: int) -> None:
    """End a session from a connection outside the pool, as a server restart does, and wait
    until it is gone."""
    # autocommit: each look at pg_stat_activity is a new snapshot
    outside = create_engine(get_engine().url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with outside.connect() as other:
        other.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while other.exec_driver_sql(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).first():
            assert time.monotonic() < deadline, f"backend {pid} still there"
            time.sleep(0.05)
    outside.dispose()


def test_a_connection_whose_session_ended_is_replaced_at_checkout() -> None:
    engine = get_engine()
    engine.dispose()  # an empty pool: the next checkout gets the connection checked in below
    with engine.connect() as connection:
        dead = backend_pid(connection)
    terminate(dead)
    with engine.connect() as connection:
        assert backend_pid(connection) != dead


def test_reads_succeed_right_after_every_session_of_the_pool_ended(client: TestClient) -> None:
    engine = get_engine()
    engine.dispose()
    with engine.connect() as first, engine.connect() as second:
        pids = [backend_pid(first), backend_pid(second)]
    for pid in pids:
        terminate(pid)
    responses = [client.get("/crew") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
