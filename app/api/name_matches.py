"""Two shortcuts for a page with a name filter, both over the crew table.

A page in sort order walks the sort's index and keeps the rows that match. Where the matches of
a name filter sit decides what that walk costs, and the table's statistics cannot say: they are
per column, so they cannot tell that every name holding "ann" is in the agency that sorts last.

- `walk_start`: a name-sorted walk starts at the first name that can match (migration 0012).
- `collects`: when the planner expects few matches, they are read by the trigram index and
  sorted instead of walked: m matches cost m rows wherever they sit, while a walk to the first
  k of them passes about k * N / m rows when they are spread evenly over the N rows, and up to
  N when they are not. So the matches are collected when m <= k * N / m, i.e. m^2 <= k * N:
  never dearer than the even walk, and bounded where the walk is not.
"""

from typing import Any

from sqlalchemy import Float, String, Text, bindparam, cast, column, literal_column, text
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


def collects(expected_matches: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether the page collects its matches and sorts them, rather than walking the sort's
    index: m^2 <= k * N (module docstring), m the planner's estimate of the matches, k the rows
    the page reads up to (offset, limit and the one after), N the crew's rows."""
    matches = cast(expected_matches, Float)
    rows_read: ColumnElement[Any] = bindparam("offset") + bindparam("limit") + literal_column("1")
    crew_rows = literal_column(CREW_ROWS, Float)
    return matches * matches <= rows_read * crew_rows
