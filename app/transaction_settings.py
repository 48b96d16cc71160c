"""Settings that last one transaction, never a session: they work behind a transaction-mode
pooler (PgBouncer `pool_mode = transaction`), where consecutive transactions of one client may
run on different server connections and a session setting would leak into other clients'.

Each statement sent through an engine is prefixed with `SET LOCAL`s. In autocommit, a query
string of several statements is one implicit transaction, so the settings hold for the
statement that follows and end with it; inside a transaction they hold until its end. No extra
round trip either way. Nothing is sent at connect (a startup `options` parameter is refused by
PgBouncer: "unsupported startup parameter: options").
"""

from typing import Any

from sqlalchemy import Engine, event

# Timestamps PostgreSQL renders as text (JSON built in the server) are in UTC, whatever the
# server's or the role's TimeZone.
TIME_ZONE = "SET LOCAL TimeZone = 'UTC'; "
STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = {milliseconds}; "
# PostgreSQL 18 folds a join of a table to itself on its key into one scan of it. The list
# statement writes one on purpose (app/api/crew_query.py: ids from an index-only walk, an array
# filter checked by primary key); folded, the walk reads the table for every row it passes.
# Earlier versions have neither the step nor the setting.
KEEP_SELF_JOINS = "SET LOCAL enable_self_join_elimination = off; "


def prefix(statement_timeout: float | None, server_version: tuple[int, ...] | None) -> str:
    """The SET LOCALs to send before a statement."""
    text = TIME_ZONE
    if statement_timeout is not None:
        text += STATEMENT_TIMEOUT.format(milliseconds=int(statement_timeout * 1000))
    if server_version is not None and server_version >= (18,):
        text += KEEP_SELF_JOINS
    return text


def install(engine: Engine, statement_timeout: float | None) -> None:
    """Prefix every single statement the engine sends (not executemany: those are inserts of
    many rows, which need no timeout of their own and run inside an ORM transaction)."""

    def add_settings(
        conn: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> tuple[str, Any]:
        if executemany:
            return statement, parameters
        return prefix(statement_timeout, conn.dialect.server_version_info) + statement, parameters

    event.listen(engine, "before_cursor_execute", add_settings, retval=True)


def without_prefix(statement: str) -> str:
    """The statement as its caller wrote it (for tools that re-run what was sent, e.g. under
    EXPLAIN)."""
    while statement.startswith("SET LOCAL "):
        statement = statement.split("; ", 1)[1]
    return statement
