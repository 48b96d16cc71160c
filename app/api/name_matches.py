"""Shortcuts for a page with a name filter, all over the crew table.

A page in sort order walks the sort's index and keeps the rows that match. Where the matches of
a name filter sit decides what that walk costs, and the table's statistics cannot say: they are
per column, so they cannot tell that every name holding "ann" is in the agency that sorts last.

- `walk_start`: a walk in name, agency or status order starts at the first value a match can
  have, as the text's trigrams tell (crew_name_trigrams, migrations 0012 and 0016), and
  `within_bounds` tells an agency or status filter that no match can have its value.
- `collects`: when the planner expects few matches, they are read by the trigram index and
  sorted instead of walked. Collecting m matches costs m table rows wherever they sit. A walk to
  the first k of them passes about k * N / m rows of the N when the matches are spread evenly,
  and up to N when they are not. A collected row costs more than a walked one (its own table
  page, found by a bitmap, against the next entry of an index): WALKED_ROW_COST says how much
  less a walked row costs. The page collects when that costs at most EVEN_WALK_SHARE times the
  walk on evenly spread matches: never much dearer than the walk at its best, and bounded
  where the walk is not.
"""

from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    String,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

# The bound on a sort key that the text's trigrams give (migrations 0012, 0016): a name
# containing the text holds each of its trigrams, so its member's name, agency and status are
# each at or above the highest of the trigrams' lowest values, and at or below the lowest of their
# highest ones. Only windows of three ASCII letters or digits count: pg_trgm makes exactly those
# from every name containing them, whatever the locale (it splits words elsewhere, and hashes
# multibyte trigrams). Trigrams no name holds, or none at all, give no bound (NULL). Same
# snapshot as the page.
TRIGRAM_BOUND = """
SELECT {across}(edge)
FROM (
    SELECT (SELECT {within}(b.{edge}) FROM crew_name_trigrams AS b WHERE b.trigram = window_text)
    FROM lower(:name_text) AS t(folded), generate_series(1, length(t.folded) - 2) AS i,
        substr(t.folded, i, 3) AS window_text
    WHERE window_text ~ '^[abcdefghijklmnopqrstuvwxyz0123456789]{{3}}$'
) AS trigram_edges(edge)
"""
# The sort keys crew_name_trigrams bounds, by their names in app/api/crew_query.py's SORT_KEYS.
BOUNDED_KEYS = frozenset({"name", "agency", "status"})
# What a row a walk passes costs, in collected rows: passed in the index alone, or read from the
# table too. Measured with `make bench`'s reads of the `match-1pct` set (2026-12-07): a page of
# the 2,000 matches collected cost 3.6 us a match over a page without a filter, a walk 0.13 us
# a row in the name index alone and 0.42 us a row with the table's.
WALKED_ROW_COST = {"index": 1 / 27, "table": 1 / 9}
# How much dearer than the walk on evenly spread matches collecting may be.
EVEN_WALK_SHARE = 2
# Without the trigram index (a server without pg_trgm, migration 0003) collecting would scan
# the whole table every time: the walk is never dearer than that.
TRIGRAM_INDEX_EXISTS = literal_column("to_regclass('ix_crew_name_trgm') IS NOT NULL", Boolean)
# The planner's count of crew rows (pg_class.reltuples: -1 before the first VACUUM or ANALYZE,
# when no shortcut is taken).
CREW_ROWS = "(SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'crew'::regclass)"


def trigram_bound(key: str, highest: bool) -> ColumnElement[Any]:
    """The lowest (`highest`: the highest) value of sort key `key` among the members whose names
    contain the bound `name_text`, as far as the trigrams tell; NULL where they tell nothing."""
    within, across, end = ("max", "min", "highest") if highest else ("min", "max", "lowest")
    bound = text(TRIGRAM_BOUND.format(across=across, within=within, edge=f"{end}_{key}"))
    bound = bound.bindparams(bindparam("name_text", type_=Text))
    return bound.columns(column("bound", String)).scalar_subquery()


def walk_start(key: str, descending: bool, first: ColumnElement[Any]) -> ColumnElement[Any]:
    """The value of sort key `key` that a walk in its order (`descending`: backwards) passes no
    match before; `first`, the walk's first value in crew, where the trigrams give no bound."""
    return func.coalesce(trigram_bound(key, descending), first)


def within_bounds(key: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether a filter's `value` of sort key `key` can be a match's: false proves that no member
    matches both filters. It reads the bound parameters alone, so PostgreSQL checks it once,
    before any walk (a one-time filter), and leaves the planner's row estimates as they were."""
    lowest = func.coalesce(trigram_bound(key, False), value)
    highest = func.coalesce(trigram_bound(key, True), value)
    return and_(lowest <= value, value <= highest)


def collects(expected_matches: ColumnElement[Any], index_only: bool) -> ColumnElement[bool]:
    """Whether the page collects its matches and sorts them, rather than walking the sort's
    index (`index_only`: a walk that reads the index alone): m * 1 <= share * cost * k * N / m,
    m the planner's estimate of the matches, k the rows the page reads up to (offset, limit and
    the one after), N the crew's rows."""
    matches = cast(expected_matches, Float)
    rows_read: ColumnElement[Any] = bindparam("offset") + bindparam("limit") + literal_column("1")
    weight = EVEN_WALK_SHARE * WALKED_ROW_COST["index" if index_only else "table"]
    crew_rows = literal_column(f"{weight!r} * {CREW_ROWS}", Float)
    return and_(TRIGRAM_INDEX_EXISTS, matches * matches <= rows_read * crew_rows)
