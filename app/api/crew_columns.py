"""The crew's columns as `GET /crew` shows, filters and sorts them: SQL expressions over any
relation with the crew columns, shared by the list statement and the ways it finds a page. No
statements here."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import String, bindparam, func, literal_column
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from app.models import CrewPublic

# What a crew member looks like in a response: the CrewPublic fields, in their order.
PUBLIC_FIELDS = tuple(CrewPublic.model_fields)
TIMESTAMP_FIELDS = {"created_at", "updated_at", "deleted_at"}
# RFC 3339 in UTC with `Z`, as pydantic writes the other endpoints' timestamps.
RFC3339_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def public_column(columns: Any, field: str) -> ColumnElement[Any]:
    """A crew column as the API shows it: timestamps rendered as RFC 3339 UTC text."""
    if field not in TIMESTAMP_FIELDS:
        return columns[field]  # type: ignore[no-any-return]
    utc = func.timezone(literal_column("'UTC'"), columns[field])
    return func.to_char(utc, literal_column(f"'{RFC3339_UTC}'")).label(field)


# The value each sort orders by, as an expression over a source's columns. Agency sorts the way
# its filter compares (case-insensitively), with no agency as '' so that the key is never NULL:
# a row comparison with NULL is unknown, which would stall a keyset walk at the first such row.
SORT_KEYS: dict[str, Callable[[Any], ColumnElement[Any]]] = {
    "name": lambda c: c.name,
    "agency": lambda c: func.coalesce(func.lower(c.agency), literal_column("''")),
    "status": lambda c: c.status,
    "updated_at": lambda c: c.updated_at,
}


def key_value(name: str) -> ColumnElement[Any]:
    """The value the agency or status filter fixes its sort key to."""
    # lower() on both sides for agency: PostgreSQL's case mapping, not Python's ("İSRO").
    return func.lower(bindparam("agency")) if name == "agency" else bindparam("status")


def crew_condition(name: str, c: Any) -> ColumnElement[bool]:
    """The WHERE condition of one filter over columns `c`; its value is the bound parameter
    `name`. Each compares the expression its index is built on (see migration 0006)."""
    match name:
        case "live":
            return c.deleted_at.is_(None)  # type: ignore[no-any-return]
        case "agency" | "status":
            return SORT_KEYS[name](c) == key_value(name)
        case "name":
            # ILIKE as PostgreSQL computes it (lower() of both sides, then LIKE), with the
            # crew's lower(name) stored (migration 0011) rather than computed per row.
            return c.name_folded.like(func.lower(bindparam("name")), escape="\\")  # type: ignore[no-any-return]
        case "launch":
            return c.launches.contains(bindparam("launch", type_=ARRAY(String(24))))  # type: ignore[no-any-return]
    raise ValueError(f"unknown crew filter {name!r}")


# The order filters are checked in, row by row: PostgreSQL keeps the written order for conditions
# of equal cost, and a walk in sort order can pass many rows, so the array test comes last.
CHEAPEST_FIRST = ("live", "status", "agency", "name", "launch")


def directed(descending: bool, *keys: ColumnElement[Any]) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY keys, all in one direction: a descending sort is the exact reverse of its
    ascending one, ties included, so one (key, id) index serves both."""
    return tuple(key.desc() if descending else key.asc() for key in keys)
