"""Pooled connections whose server has gone, found without a round trip. No SQL here.

A server that ends a session (restart, `pg_terminate_backend`, idle timeout, a proxy going
away) sends an error message and closes the socket; a connection idle in the pool has nothing
else to read. So a socket with something to read at checkout belongs to a dead session, and
the pool replaces it before a request uses it: what `pool_pre_ping` does, minus its round
trip (a `SELECT 1` on every checkout).

A session lost without a word (a network partition) is still found on first use: the failing
statement invalidates the whole pool, and the next checkouts connect afresh.
"""

import select
from typing import Any

from sqlalchemy.exc import DisconnectionError


def replace_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool `checkout` listener: raising DisconnectionError makes the pool connect afresh
    (up to three tries) and hand out the new connection instead."""
    if dbapi_connection.closed:
        raise DisconnectionError("the connection was closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server ended the session while it was idle in the pool")
