"""The `GET /crew` list statement: filters, sort keys, offset or keyset paging, and the response
envelope, rendered as JSON by PostgreSQL in one statement. No HTTP here.

A statement is compiled once per shape (source, filters, sort, paging) and cached. The source is
any relation with the crew columns, named in SOURCES (today the `crew` table), so another view
of the crew gets the same filters, sorts and paging by adding an entry there.

Every sort key ends in the id, and each (key, id) pair has a btree index (migration 0006), so a
page is an index range scan that stops after `limit` rows, also deep into the table by cursor.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.elements import ColumnElement

from app.api.crew_count import CrewCount
from app.api.crew_sort import CrewSort
from app.api.name_matches import BOUNDED_KEYS, collects, walk_start, within_bounds
from app.change_models import CrewVersion
from app.models import Crew, CrewPublic

DIALECT = postgresql.psycopg2.dialect()  # type: ignore[no-untyped-call]
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


def crew_as_of() -> FromClause:
    """The crew as they were at the bound instant `as_of`: rows unchanged since then, as they
    are, and for rows changed since, the version valid then (a closed one).

    Each half is a whole table and the instant is one condition over both, on (updated_at,
    until): PostgreSQL pushes it into each half (the crew's `until` is infinity, so there it is
    `updated_at <= as_of`) and merges the halves in sort order, the crew by its (sort key, id)
    index and the versions changed since `as_of` (the partial index on `valid_to`, usually few)
    by a sort. With the condition written inside a half instead, it sorts the whole crew.
    """
    crew, versions = Crew.__table__.c, CrewVersion.__table__.c  # type: ignore[attr-defined]
    renamed = {"id": versions.crew_id, "updated_at": versions.valid_from}
    infinity = literal_column("'infinity'::timestamptz", DateTime(timezone=True))
    current = select(*(crew[f] for f in PUBLIC_FIELDS), infinity.label("until"), crew.name_folded)
    past = select(
        *(renamed.get(f, versions.get(f)).label(f) for f in PUBLIC_FIELDS),
        versions.valid_to.label("until"),
        func.lower(versions.name).label("name_folded"),
    )
    both = union_all(current, past).subquery("crew_and_versions")
    as_of = bindparam("as_of", type_=DateTime(timezone=True))
    at = select(both).where(both.c.updated_at <= as_of, both.c.until > as_of)
    return at.subquery("crew_as_of")


# Relations a list can read from, by name: each has (at least) the crew columns.
SOURCES: dict[str, Callable[[], FromClause]] = {
    "crew": lambda: Crew.__table__,  # type: ignore[attr-defined]
    "crew_as_of": crew_as_of,
}


def last_change_as_of() -> ColumnElement[Any]:
    """The newest change at or before the bound `as_of`: the newest `updated_at` up to then
    among the crew (one step back on its updated_at index), or the start of a version valid then
    and closed since (the few versions closed after `as_of`, by their partial index)."""
    crew, versions = Crew.__table__.c, CrewVersion.__table__.c  # type: ignore[attr-defined]
    as_of = bindparam("as_of", type_=DateTime(timezone=True))
    unchanged = select(func.max(crew.updated_at)).where(crew.updated_at <= as_of)
    changed = select(func.max(versions.valid_from)).where(
        versions.valid_to > as_of, versions.valid_from <= as_of
    )
    return func.greatest(unchanged.scalar_subquery(), changed.scalar_subquery())


# The validator of each source: the newest change it shows (same snapshot as the page).
LAST_CHANGE: dict[str, Callable[[], ColumnElement[Any]]] = {
    "crew": lambda: select(func.max(Crew.updated_at)).scalar_subquery(),
    "crew_as_of": last_change_as_of,
}

# The value each sort orders by, as an expression over a source's columns. Agency sorts the way
# its filter compares (case-insensitively), with no agency as '' so that the key is never NULL:
# a row comparison with NULL is unknown, which would stall a keyset walk at the first such row.
SORT_KEYS: dict[str, Callable[[Any], ColumnElement[Any]]] = {
    "name": lambda c: c.name,
    "agency": lambda c: func.coalesce(func.lower(c.agency), literal_column("''")),
    "status": lambda c: c.status,
    "updated_at": lambda c: c.updated_at,
}


def crew_condition(name: str, c: Any) -> ColumnElement[bool]:
    """The WHERE condition of one filter over columns `c`; its value is the bound parameter
    `name`. Each compares the expression its index is built on (see migration 0006)."""
    match name:
        case "live":
            return c.deleted_at.is_(None)  # type: ignore[no-any-return]
        case "agency":
            # lower() on both sides: PostgreSQL's case mapping, not Python's ("İSRO").
            return SORT_KEYS["agency"](c) == func.lower(bindparam("agency"))
        case "status":
            return c.status == bindparam("status")  # type: ignore[no-any-return]
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

# Filters whose columns a sort's index carries besides its key (migration 0011): with only these,
# the page's ids can come from an index-only walk, and then only the page's rows are read from
# the table. That pays when the walk passes many rows it does not return (a name filter, an
# offset); otherwise reading the rows directly is cheaper than a second lookup by id.
INDEX_ONLY_FILTERS = {"name": frozenset({"live", "name", "status", "agency"})}
# Filters no index of a sort can carry (an array can outgrow a btree entry), checked on the table
# beside an index-only walk: a join of crew to itself by primary key, with which PostgreSQL looks
# up only the rows that pass the walk's filters, or starts from the filter's own index when few
# rows match it (app/db.py keeps PostgreSQL 18 from folding the join back into one scan).
CHECKED_BY_KEY = frozenset({"launch"})


def directed(descending: bool, *keys: ColumnElement[Any]) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY keys, all in one direction: a descending sort is the exact reverse of its
    ascending one, ties included, so one (key, id) index serves both."""
    return tuple(key.desc() if descending else key.asc() for key in keys)


@dataclass(frozen=True)
class ListQuery:
    """The SQL of one list shape.

    `matches` selects the matching rows (ignoring paging), for planner_row_estimate().
    `response` returns (body, next_key, last_change): the envelope as JSON text, the (sort
    key, id) JSON array of the page's last row when more rows follow, else NULL, and the
    newest `updated_at` the source shows (the validator of conditional GET, same snapshot).
    Its parameters: the filter values, `matches_sql`, `estimate_above`, `limit`, `offset`,
    and with keyset paging `after_key`/`after_id`, the position the page starts after.
    """

    matches: str
    response: str


def compiled(statement: Any) -> str:
    return str(statement.compile(dialect=DIALECT))


def reads_ids_first(source: str, filters: frozenset[str], sort: CrewSort, skips: bool) -> bool:
    """Whether the page's ids come from an index-only walk, then its rows by id."""
    if source != "crew" or not ("name" in filters or skips):
        return False
    walk_only = INDEX_ONLY_FILTERS.get(sort.lstrip("-"), frozenset())
    return filters - key_checked(filters, skips) <= walk_only


def key_checked(filters: frozenset[str], skips: bool) -> frozenset[str]:
    """The filters an index-only walk leaves to a lookup by primary key: beside a name filter,
    which most rows walked fail on the index alone, and on a page that skips nothing. After an
    offset, each row skipped would need its lookup, dearer than the plain walk's own read."""
    return filters & CHECKED_BY_KEY if "name" in filters and not skips else frozenset()


def rows_checked_by_key(found: Select[Any], walked: Any, filters: frozenset[str]) -> Any:
    """The page: the (id, sort_key) walk `found` over the crew rows `walked`, each row it
    passes looked up by primary key and checked against `filters`. The lookup reads the whole
    row, so the page's columns come with it."""
    row = Crew.__table__.alias("checked_row")  # type: ignore[attr-defined]
    conditions = (crew_condition(name, row.c) for name in CHEAPEST_FIRST if name in filters)
    columns = (public_column(row.c, f) for f in PUBLIC_FIELDS)
    checked = found.join_from(walked, row, row.c.id == walked.c.id).where(*conditions)
    return checked.with_only_columns(*columns, found.selected_columns.sort_key)


def rows_of(found: Any) -> Any:
    """The crew rows of the (id, sort_key) pairs `found`."""
    crew = Crew.__table__.alias("member_row")  # type: ignore[attr-defined]
    columns = (public_column(crew.c, f) for f in PUBLIC_FIELDS)
    return select(*columns, found.c.sort_key).join(found, found.c.id == crew.c.id)


def total_of(
    relation: Any,
    conditions: list[ColumnElement[bool]],
    expected: ColumnElement[Any],
    rows_in_page: Any,
    keyset: bool,
    count_mode: CrewCount,
) -> tuple[ColumnElement[Any], ColumnElement[bool]]:
    """`total` and `total_exact` as `count_mode` computes them (app/api/crew_count.py).

    What the page proves comes first and costs nothing: a first page that holds every match has
    counted them, and so has a last page reached by offset (the offset skipped that many
    matches). Otherwise an exact count, or the planner's estimate raised to what the page has
    seen (`expected`). PostgreSQL runs each sub-plan only when a branch needs it: a whole first
    page runs neither the EXPLAIN (unless the page's plan asked for it) nor the count."""
    count = select(func.count()).select_from(relation).where(*conditions).scalar_subquery()
    limit, offset = bindparam("limit", type_=Integer), bindparam("offset", type_=Integer)
    # A cursor page has not seen the matches before it, an offset page knows `offset` of them.
    zero: ColumnElement[int] = literal_column("0", Integer)
    seen = rows_in_page if keyset else offset + rows_in_page
    at_least = func.greatest(expected, case((rows_in_page > zero, seen), else_=zero))
    whole: ColumnElement[bool] = false()
    if not keyset:
        whole = and_(rows_in_page <= limit, or_(offset == zero, rows_in_page > zero))
    if count_mode is CrewCount.exact:
        return case((whole, seen), else_=count), literal_column("true")
    if count_mode is CrewCount.estimated:
        cheap = expected <= bindparam("estimate_above")
        return case((whole, seen), (cheap, count), else_=at_least), or_(whole, cheap)
    return case((whole, seen), else_=at_least), whole


def trigram_bounds(
    columns: Any, filters: frozenset[str], sort: CrewSort, keyset: bool
) -> list[ColumnElement[bool]]:
    """What the name filter's trigrams allow (app/api/name_matches.py): a walk in name, agency
    or status order starts at the first value a match can have, and an agency or status filter
    whose value no match can have matches nothing. A cursor page starts after a match of the
    page before, so past that start already; and with both bounds the planner may sort the rows
    after the cursor rather than walk them."""
    conditions = []
    name, descending = sort.lstrip("-"), sort.startswith("-")
    if name in BOUNDED_KEYS and not keyset:
        first_row = Crew.__table__.alias("first_row")  # type: ignore[attr-defined]
        first = (func.max if descending else func.min)(SORT_KEYS[name](first_row.c))
        start = walk_start(name, descending, select(first).scalar_subquery())
        key = SORT_KEYS[name](columns)
        conditions.append(key <= start if descending else key >= start)
    values = {"agency": func.lower(bindparam("agency")), "status": bindparam("status")}
    conditions += [within_bounds(f, value) for f, value in values.items() if f in filters]
    return conditions


def matches_sorted(
    relation: Any,
    conditions: list[ColumnElement[bool]],
    bounds: list[ColumnElement[bool]],
    sort: CrewSort,
    key: ColumnElement[Any],
    collect: ColumnElement[bool],
) -> Any:
    """If `collect`, the page's rows out of every match, read by the filters' own indexes and
    sorted (app/api/name_matches.py); only the page's rows are then read whole, by id.
    MATERIALIZED keeps PostgreSQL from turning the read back into a walk in sort order.
    `bounds`: the cursor's position, if any."""
    every = select(relation.c.id, key.label("sort_key")).where(*conditions, *bounds)
    matches = every.cte("matches").prefix_with("MATERIALIZED")
    descending = sort.startswith("-")
    first = (
        select(matches)
        .where(collect)
        .order_by(*directed(descending, matches.c.sort_key, matches.c.id))
        .offset(bindparam("offset"))
        .limit(bindparam("limit", type_=Integer) + literal_column("1"))
        .subquery("collected")
    )
    return rows_of(first)


@functools.cache
def list_query(
    source: str,
    filters: frozenset[str],
    sort: CrewSort,
    keyset: bool,
    skips: bool = False,
    trigrams: bool = False,
    count_mode: CrewCount = CrewCount.planned,
) -> ListQuery:
    """The statements for one combination of source, filters, sort and paging kind (keyset:
    after a cursor; skips: with an offset above 0). `trigrams`: the name filter's text is long
    enough to have some, so a name-sorted walk can look up where to start, and the matches can
    be collected by the trigram index (app/api/name_matches.py). `count_mode`: how
    `total` is computed."""
    relation = SOURCES[source]()
    conditions = [crew_condition(name, relation.c) for name in CHEAPEST_FIRST if name in filters]
    matches: Select[Any] = select(literal_column("1")).select_from(relation).where(*conditions)
    descending, sort_key = sort.startswith("-"), SORT_KEYS[sort.lstrip("-")]
    key, limit = sort_key(relation.c), bindparam("limit", type_=Integer)
    ids_first = reads_ids_first(source, filters, sort, skips)
    by_key = key_checked(filters, skips) if ids_first else frozenset()
    walked = filters - by_key
    where = [crew_condition(name, relation.c) for name in CHEAPEST_FIRST if name in walked]
    if source == "crew" and trigrams and "name" in filters:
        where += trigram_bounds(relation.c, filters, sort, keyset)
    after_cursor = []
    if keyset:
        position = tuple_(key, relation.c.id)
        after = tuple_(bindparam("after_key"), bindparam("after_id"))
        after_cursor.append(position < after if descending else position > after)
    where += after_cursor
    # One row beyond the page tells whether another page follows.
    found = (
        select(relation.c.id, key.label("sort_key"))
        .where(*where)
        .order_by(*directed(descending, key, relation.c.id))
        .offset(bindparam("offset"))
        .limit(limit + literal_column("1"))
    )
    estimate = select(func.planner_row_estimate(bindparam("matches_sql")).label("rows"))
    expected = select(estimate.cte("estimate").c.rows).scalar_subquery()
    if by_key:
        walk = rows_checked_by_key(found, relation, by_key)
    elif ids_first:
        walk = rows_of(found.cte("found"))
    else:
        columns = (public_column(relation.c, f) for f in PUBLIC_FIELDS)
        walk = found.with_only_columns(*columns, key.label("sort_key"))
    if source == "crew" and trigrams and "name" in filters:
        # The page is the walk or the collected matches, as collects() decides: the branch not
        # taken is never run (its condition is a one-time filter on the estimate).
        collect = collects(expected, index_only=ids_first)
        collected = matches_sorted(relation, conditions, after_cursor, sort, key, collect)
        page = union_all(collected, walk.where(~collect)).cte("page")
    else:
        page = walk.cte("page")
    in_page_order = directed(descending, page.c.sort_key, page.c.id)
    member = (
        select(*(page.c[f] for f in PUBLIC_FIELDS))
        .order_by(*in_page_order)
        .limit(limit)
        .subquery("member")
    )
    member_order = directed(descending, sort_key(member.c), member.c.id)
    in_order = aggregate_order_by(member.table_valued(), *member_order)
    items = select(func.coalesce(func.json_agg(in_order), text("'[]'::json"))).scalar_subquery()
    rows_in_page = select(func.count()).select_from(page).scalar_subquery()
    total, exact = total_of(relation, conditions, expected, rows_in_page, keyset, count_mode)
    response = func.json_build_object(
        *(literal_column("'items'"), items),
        *(literal_column("'total'"), total),
        *(literal_column("'limit'"), limit),
        *(literal_column("'offset'"), bindparam("offset")),
        *(literal_column("'total_exact'"), exact),
    )
    last_key = (
        select(cast(func.json_build_array(page.c.sort_key, page.c.id), Text))
        .order_by(*in_page_order)
        .offset(limit - literal_column("1"))
        .limit(literal_column("1"))
        .scalar_subquery()
    )
    next_key = case((rows_in_page > limit, last_key))
    last_change = LAST_CHANGE[source]()
    statement = select(cast(response, Text), next_key, last_change)
    return ListQuery(compiled(matches), compiled(statement))
