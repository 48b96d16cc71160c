"""How `GET /crew` finds the rows of a page, as the `page` CTE of its statement: a walk of the
sort's (key, id) index that stops after the page, and, where a name filter makes that walk's
length unknowable, a walk of bounded length that gives way to the matches collected and sorted.
No HTTP here.

Every page carries one row beyond it (`limit` + 1), which tells whether another page follows.
"""

from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    func,
    literal_column,
    not_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter

from app.api.crew_columns import (
    CHEAPEST_FIRST,
    PUBLIC_FIELDS,
    crew_condition,
    directed,
    key_value,
    public_column,
)
from app.api.crew_sort import CrewSort
from app.models import Crew

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
# A walk in sort order with a name filter passes the rows between the matches: few when matches
# are many and spread over the order, the whole table when they are rare or all sit late in it
# (every match in the last agency of an agency sort). The planner cannot tell these apart (its
# estimate of a substring match is rough, and it knows nothing of how the matches correlate with
# the sort key), so it is not asked to. The walk passes at most WALK_ROWS_PER_PAGE_ROW rows per
# row of the page, or INDEX_ONLY_WALK_ROWS_PER_PAGE_ROW where it reads the name index alone
# (`walk_cap`): a collected match costs about what a walked row does that reads the table
# (0.7 to 0.9 us here), five of an index-only one (0.14 us), and walking before collecting costs
# no more than collecting where matches are as dense as a page in sqrt(page x table) rows, some
# 4,500 of 200,000 for a page of 100. When it finds less than a page and the planner expects few
# matches, the matches are collected by the trigram index and the first page of them sorted;
# when it expects more, the walk goes on: matches that many are rarely all late in the order,
# and collecting them would cost more than the walk. Few is at most COLLECT_AT_MOST and at most
# COLLECT_SHARE of the table (above which the planner would collect them by a scan of the
# table). The estimate errs low for rare texts (20 for 2,000), by a quarter for common ones.
WALK_ROWS_PER_PAGE_ROW = 50
INDEX_ONLY_WALK_ROWS_PER_PAGE_ROW = 200
COLLECT_AT_MOST = 10_000
COLLECT_SHARE = 0.05
# Filters that fix their sort's key to one value (the name filter is a substring).
EQUAL_TO_KEY = frozenset({"agency", "status"})


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


def walk_cap(limit: int, index_only: bool) -> int:
    """The rows a capped walk of a page of `limit` may pass (see WALK_ROWS_PER_PAGE_ROW)."""
    per_row = INDEX_ONLY_WALK_ROWS_PER_PAGE_ROW if index_only else WALK_ROWS_PER_PAGE_ROW
    return per_row * (limit + 1)


def capped(source: str, filters: frozenset[str], skips: bool, trigrams: bool) -> bool:
    """Whether the walk is bounded and gives way to collected matches: a name filter with
    trigrams to look up, on the crew, on a page without offset and without a filter checked by
    key (beside which the planner weighs the launch's own index, whose estimate is good)."""
    plain = "name" in filters and not filters & CHECKED_BY_KEY
    return source == "crew" and trigrams and plain and not skips


def rows_checked_by_key(found: Select[Any], walked: Any, filters: frozenset[str], name: str) -> Any:
    """The (id, sort_key) walk `found` over the crew rows `walked`, each row it passes looked up
    by primary key and checked against `filters`. The lookup reads the whole row, so the page's
    columns come with it."""
    row = Crew.__table__.alias("checked_row")  # type: ignore[attr-defined]
    conditions = (crew_condition(f, row.c) for f in CHEAPEST_FIRST if f in filters)
    columns = (public_column(row.c, f) for f in PUBLIC_FIELDS)
    checked = found.join_from(walked, row, row.c.id == walked.c.id).where(*conditions)
    return checked.with_only_columns(*columns, found.selected_columns.sort_key).cte(name)


def rows_of(found: Any, name: str) -> Any:
    """The crew rows of the (id, sort_key) pairs `found`."""
    crew = Crew.__table__.alias("member_row")  # type: ignore[attr-defined]
    columns = (public_column(crew.c, f) for f in PUBLIC_FIELDS)
    return select(*columns, found.c.sort_key).join(found, found.c.id == crew.c.id).cte(name)


def walked_page(
    rows: Any,
    key: ColumnElement[Any],
    filters: frozenset[str],
    ids_first: bool,
    by_key: frozenset[str],
    descending: bool,
    bounds: list[ColumnElement[bool]],
    name: str,
) -> Any:
    """The page walked in (key, id) order over `rows`, within `bounds`, as the CTE `name`."""
    where = [crew_condition(f, rows.c) for f in CHEAPEST_FIRST if f in filters - by_key]
    found = (
        select(rows.c.id, key.label("sort_key"))
        .where(*where, *bounds)
        .order_by(*directed(descending, key, rows.c.id))
        .offset(bindparam("offset"))
        .limit(bindparam("limit", type_=Integer) + literal_column("1"))
    )
    if by_key:
        return rows_checked_by_key(found, rows, by_key, name)
    if ids_first:
        return rows_of(found.cte(f"{name}_ids"), name)
    columns = (public_column(rows.c, f) for f in PUBLIC_FIELDS)
    return found.with_only_columns(*columns, key.label("sort_key")).cte(name)


def capped_walk(
    relation: Any,
    key: ColumnElement[Any],
    filters: frozenset[str],
    sort: CrewSort,
    ids_first: bool,
    bounds: list[ColumnElement[bool]],
    keyset: bool,
) -> Any:
    """The page a walk of at most `walk_cap` rows within `bounds` finds, as `walked_page`: the
    rows a subquery in sort order with a LIMIT, which PostgreSQL reads from the sort's index and
    stops; the filters above it.

    A filter fixing the sort key (status=...&sort=status) bounds the walk's range; then a
    cursor's position is an id (its key checked above), one range of the index, which PostgreSQL
    walks rather than sorting what a row comparison leaves it to guess. Above the walk, a key
    that is a column is ordered by as that column, and a fixed key is compared as the walk's key
    column, so PostgreSQL knows that the walk's order is the page's."""
    descending = sort.startswith("-")
    plain = next((c.name for c in relation.c if c is key), None)
    fixed = filters & EQUAL_TO_KEY & {sort.lstrip("-")}
    inner = [key == key_value(f) for f in fixed]
    after_id: ColumnElement[Any] = bindparam("after_id")
    if fixed and keyset:
        inner.append(relation.c.id < after_id if descending else relation.c.id > after_id)
    else:
        inner += bounds
    bounded = select(relation, *([] if plain else [key.label("sort_key")])).where(*inner)
    bounded = bounded.order_by(*directed(descending, key, relation.c.id))
    rows = bounded.limit(bindparam("walk_cap", type_=Integer)).subquery("walked")
    walk_key = rows.c[plain or "sort_key"]
    pinned = [walk_key == key_value(f) for f in fixed]
    if fixed and keyset:
        at, after = tuple_(walk_key, rows.c.id), tuple_(bindparam("after_key"), after_id)
        pinned.append(at < after if descending else at > after)
    kept = filters - fixed
    return walked_page(
        rows, walk_key, kept, ids_first, frozenset(), descending, pinned, "walked_page"
    )


def collected_matches(
    relation: Any,
    key: ColumnElement[Any],
    filters: frozenset[str],
    sort: CrewSort,
    position: list[ColumnElement[bool]],
) -> Any:
    """The first page of the matches after `position`, as `collected_page`: the matches behind
    OFFSET 0, so PostgreSQL reads them the cheapest way (the trigram index, ANDed with the other
    filters' indexes) rather than in sort order, then keeps the page in a top-N sort of their
    (key, id) and reads its rows by id. Plans show the matches' scan as `collected_row`."""
    row = relation.alias("collected_row")
    adapt = ClauseAdapter(row).traverse
    conditions = [crew_condition(f, row.c) for f in CHEAPEST_FIRST if f in filters]
    matching = select(row.c.id, adapt(key).label("sort_key"))
    matching = matching.where(*conditions, *(adapt(p) for p in position))
    matches = matching.offset(literal_column("0")).subquery("matching")
    first = (
        select(matches)
        .order_by(*directed(sort.startswith("-"), matches.c.sort_key, matches.c.id))
        .limit(bindparam("limit", type_=Integer) + literal_column("1"))
        .cte("first_matches")
    )
    return rows_of(first, "collected_page")


def few_matches_expected() -> ColumnElement[bool]:
    """Whether the planner expects at most COLLECT_AT_MOST matches and COLLECT_SHARE of the
    table (its estimate of the bound `matches_sql`, and the table's size from its statistics)."""
    expected = select(func.planner_row_estimate(bindparam("matches_sql"))).scalar_subquery()
    share = select(text(f"reltuples * {COLLECT_SHARE} FROM pg_class WHERE oid = 'crew'::regclass"))
    at_most = bindparam("collect_at_most", type_=Integer)
    return expected <= func.least(at_most, share.scalar_subquery())


def walked_or_collected(
    relation: Any,
    key: ColumnElement[Any],
    filters: frozenset[str],
    sort: CrewSort,
    ids_first: bool,
    start: list[ColumnElement[bool]],
    position: list[ColumnElement[bool]],
) -> Any:
    """The page of the capped walk when it finds a whole page; else, when few matches are
    expected, the first page of them collected and sorted; else the page of a walk that goes
    on. Each branch runs only when its one-time condition holds, in that order."""
    bounds, keyset = [*start, *position], bool(position)
    walked = capped_walk(relation, key, filters, sort, ids_first, bounds, keyset)
    collected = collected_matches(relation, key, filters, sort, position)
    descending = sort.startswith("-")
    walk_on = walked_page(
        relation, key, filters, ids_first, frozenset(), descending, bounds, "walk_on"
    )
    whole = select(func.count()).select_from(walked).scalar_subquery() > bindparam(
        "limit", type_=Integer
    )
    few = few_matches_expected()
    columns = (*PUBLIC_FIELDS, "sort_key")
    return union_all(
        select(*(walked.c[f] for f in columns)).where(whole),
        select(*(collected.c[f] for f in columns)).where(not_(whole), few),
        select(*(walk_on.c[f] for f in columns)).where(not_(whole), not_(few)),
    ).cte("page")
