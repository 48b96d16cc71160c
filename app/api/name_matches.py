"""Two shortcuts for a page with a name filter, both over the crew table.

A page in sort order walks the sort's index and keeps the rows that match. Where the matches of
a name filter sit decides what that walk costs, and the table's statistics cannot say: they are
per column, so they cannot tell that every name holding "ann" is in the agency that sorts last.

- `walk_start`: a name-sorted walk starts at the first name that can match (migration 0012).
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
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

# Where a name-sorted walk with a name filter can start (migration 0012): a name containing the
# text holds each of its trigrams, so it sorts at or after the lowest name holding any one of
# them. Only windows of three ASCII letters or digits count: pg_trgm makes exactly those from
# every name containing them, whatever the locale (it splits words elsewhere, and hashes
# multibyte trigrams). Trigrams no name holds, or none at all, give no bound: the walk starts at
# the first name. Mirrored for a descending walk. Same snapshot as the page.
WALK_START = """
SELECT coalesce({pick}(edge), (SELECT {first}(name) FROM crew))
FROM (
    SELECT (SELECT {first}(b.{edge}) FROM crew_name_trigrams AS b WHERE b.trigram = window_text)
    FROM lower(:name_text) AS t(folded), generate_series(1, length(t.folded) - 2) AS i,
        substr(t.folded, i, 3) AS window_text
    WHERE window_text ~ '^[abcdefghijklmnopqrstuvwxyz0123456789]{{3}}$'
) AS trigram_edges(edge)
"""
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


def walk_start(descending: bool) -> ColumnElement[Any]:
    """The name a walk in name order passes no match before, for the bound `name_text`."""
    pick, edge, first = (
        ("min", "highest_name", "max") if descending else ("max", "lowest_name", "min")
    )
    start = text(WALK_START.format(pick=pick, edge=edge, first=first))
    start = start.bindparams(bindparam("name_text", type_=Text))
    return start.columns(column("start", String)).scalar_subquery()


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
