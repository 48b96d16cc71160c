"""What a database error means to whoever met it: wait and try again, or give up. No I/O.

Classified by SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html), most
specific code first; an error without one (the driver lost the socket) is a connection lost.
"""

from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

READ_ONLY = "25006"


@dataclass(frozen=True)
class Kind:
    words: str
    transient: bool  # the same statement may succeed later, against the same database


# By SQLSTATE prefix; the longest matching prefix wins.
KINDS = {
    READ_ONLY: Kind("database is read-only", True),  # a standby, or default_transaction_read_only
    "08": Kind("database connection lost", True),  # connection exception
    "57P": Kind("database shutting down or restarting", True),  # operator intervention
    "57014": Kind("statement cancelled or timed out", True),  # query_canceled
    "55P03": Kind("lock not available in time", True),  # lock_timeout
    "53": Kind("database out of resources", True),  # disk full, out of memory, connections
    "58": Kind("database system error", True),  # I/O error outside PostgreSQL
    "40": Kind("transaction rolled back by the database", True),  # serialization, deadlock
    "25": Kind("invalid transaction state", False),
    "42": Kind("statement refused by the database", False),  # syntax, missing column/table
    "23": Kind("constraint violated", False),
    "22": Kind("invalid data", False),
    "XX": Kind("database internal error", False),
}
UNKNOWN = Kind("database error", False)
NO_ANSWER = Kind("database connection lost", True)


def sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None) or exc, "pgcode", None)


def kind_of(exc: BaseException) -> Kind:
    code = sqlstate(exc)
    if code is None:
        lost = isinstance(exc, (OperationalError, InterfaceError, PoolTimeout))
        return NO_ANSWER if lost else UNKNOWN
    for length in range(len(code), 1, -1):
        if code[:length] in KINDS:
            return KINDS[code[:length]]
    return UNKNOWN


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, (DBAPIError, PoolTimeout))


def is_transient(exc: Exception) -> bool:
    """A database error worth waiting out (stamina's `on` predicate)."""
    return is_database_error(exc) and kind_of(exc).transient


def driver_cause(exc: BaseException) -> str:
    """The driver's exception type behind a SQLAlchemy one (`ReadOnlySqlTransaction`)."""
    return type(getattr(exc, "orig", None) or exc).__name__


def describe(exc: BaseException) -> str:
    """`database is read-only (ReadOnlySqlTransaction)`: what happened and the driver's name
    for it, fit for a run's error or an API response (no SQL, no server text)."""
    return f"{kind_of(exc).words} ({driver_cause(exc)})"
