"""crew_name_trigrams: where each trigram's names sit in agency and status order too

A page sorted by agency or status with a name filter walks that sort's index and keeps the rows
whose names contain the text. Where every match shares the agency that sorts last (all names
holding "ann" in JAXA), the walk passed every member of the agencies before it; paired with an
agency none of them is in, it passed all of that agency to return nothing. PostgreSQL cannot
see this: its statistics are per column.

So each bound row now also holds the lowest and highest agency (its sort key,
coalesce(lower(agency), '')) and status of the names it covers. A walk in agency or status order
starts at the highest of the text's trigrams' lowest values and ends after the lowest of their
highest ones, and an agency or status filter outside them matches nothing (app/api/name_matches.py).

They widen by 0012's rules, for the same writes: appended rows, narrowed only by
crew_name_trigrams_rebuild(), which the migration runs to fill them for the crew already there.
0015's function for a first load is replaced by one given each member's name, agency and status.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The orders a bound row covers: its columns are lowest_<key> and highest_<key>.
KEYS = ("name", "agency", "status")
# Appends a row per trigram of the names in `rows` (columns name, name_folded and the other
# KEYS) whose bounds the trigram's rows so far do not cover. See 0012 for why rows are appended.
WIDEN = """
WITH seen AS (
    SELECT trigram, {aggregates}
    FROM {rows} AS w, unnest(show_trgm(w.name_folded)) AS trigram
    WHERE length(trigram) = 3 AND strpos(trigram, ' ') = 0
    GROUP BY trigram
), known AS (
    SELECT trigram, {known}
    FROM crew_name_trigrams WHERE trigram IN (SELECT trigram FROM seen)
    GROUP BY trigram
)
INSERT INTO crew_name_trigrams (trigram, {columns})
SELECT s.trigram, {seen_columns} FROM seen AS s LEFT JOIN known AS k USING (trigram)
WHERE k.trigram IS NULL OR {widens}
"""
# The rows each function widens for, with the agency as its sort key. OFFSET 0 keeps each
# member's columns computed once, not once for each of its trigrams (lower(agency), or a value
# out of JSON, for every one of 3 million (trigram, member) pairs cost a first load of 200,000
# members 0.8 s).
MEMBER = "name, name_folded, coalesce(lower(agency), '') AS agency, status"
MEMBER_ROWS = {
    "run": f"(SELECT {MEMBER} FROM crew WHERE updated_at = now() OFFSET 0)",
    "crew": f"(SELECT {MEMBER} FROM crew OFFSET 0)",
    "written": f"(SELECT {MEMBER} FROM written OFFSET 0)",
    # a first load's members, as a JSON array of [name, agency, status] (app/ingest/bulk.py)
    "given": "(SELECT m->>0 AS name, lower(m->>0) AS name_folded, "
    "coalesce(lower(m->>1), '') AS agency, m->>2 AS status "
    "FROM jsonb_array_elements(members) AS m OFFSET 0)",
}
# Before this migration (0012, 0015): names only.
NAME_ROWS = {
    "run": "(SELECT name, name_folded FROM crew WHERE updated_at = now())",
    "crew": "crew",
    "written": "written",
    "given": "(SELECT name, lower(name) AS name_folded FROM unnest(names) AS name)",
}
ON_WRITE = """
CREATE OR REPLACE FUNCTION crew_name_trigrams_on_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('crew_etl.name_bounds', true), '') <> 'by_run' THEN
        {widen};
    END IF;
    RETURN NULL;
END
$$
"""
# enable_sort = off: see 0012 (millions of (trigram, name) pairs, grouped by hashing).
FUNCTION = """
CREATE OR REPLACE FUNCTION {name}({arguments}) RETURNS void LANGUAGE {language}
SET enable_sort = off AS $$
{body}
$$
"""
# A rebuild forgets every bound row, so it must see every name whose bounds it drops: it waits
# for the writers of crew to commit and keeps new ones out until it does (readers go on). A
# first load holds off a rebuild the same way until its rows are in crew (app/ingest/bulk.py):
# its bounds commit before them. The migration holds writers off too, so that none appends a
# row without the new columns between the DELETE and the ALTER.
HOLD_WRITERS = "LOCK TABLE crew IN SHARE MODE"
# 0012 left these out on a server without pg_trgm; a server that has it now gets them here.
TRIGGERS = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'crew'::regclass"
TRIGGER = (
    "CREATE TRIGGER crew_name_trigrams_on_{event} AFTER {event} ON crew "
    "REFERENCING NEW TABLE AS written FOR EACH STATEMENT "
    "EXECUTE FUNCTION crew_name_trigrams_on_write()"
)
WIDEN_FOR_RUN = "crew_name_trigrams_widen_for_run"
REBUILD = "crew_name_trigrams_rebuild"
FOR_NAMES = "crew_name_trigrams_widen_for_names"  # 0015's
FOR_MEMBERS = "crew_name_trigrams_widen_for_members"


def widen(keys: Sequence[str], rows: str) -> str:
    """WIDEN for the bounds of `keys` over `rows`."""
    ends = (("lowest", "min", "<"), ("highest", "max", ">"))
    bounds = [(f"{end}_{key}", key, pick, wider) for key in keys for end, pick, wider in ends]
    return WIDEN.format(
        rows=rows,
        aggregates=", ".join(f"{pick}(w.{key}) AS {column}" for column, key, pick, _ in bounds),
        known=", ".join(f"{pick}({column}) AS {column}" for column, _, pick, _ in bounds),
        columns=", ".join(column for column, *_ in bounds),
        seen_columns=", ".join(f"s.{column}" for column, *_ in bounds),
        widens=" OR ".join(f"s.{column} {wider} k.{column}" for column, *_, wider in bounds),
    )


def create_functions(keys: Sequence[str], rows: dict[str, str], given: tuple[str, str]) -> None:
    """The trigger's function, the run's, the rebuild and the first load's (`given`: its name
    and arguments), all widening the bounds of `keys`."""
    op.execute(ON_WRITE.format(widen=widen(keys, rows["written"])))
    run = widen(keys, rows["run"])
    op.execute(FUNCTION.format(name=WIDEN_FOR_RUN, arguments="", language="sql", body=run))
    rebuild = f"{HOLD_WRITERS}; DELETE FROM crew_name_trigrams;" + widen(keys, rows["crew"])
    op.execute(FUNCTION.format(name=REBUILD, arguments="", language="sql", body=rebuild))
    name, arguments = given
    body = widen(keys, rows["given"])
    op.execute(FUNCTION.format(name=name, arguments=arguments, language="sql", body=body))


def has_pg_trgm() -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    op.execute(HOLD_WRITERS)
    op.execute("DELETE FROM crew_name_trigrams")  # rebuilt below, with the new columns
    for key in KEYS[1:]:
        for end in ("lowest", "highest"):
            op.add_column("crew_name_trigrams", sa.Column(f"{end}_{key}", sa.Text, nullable=False))
    op.execute(f"DROP FUNCTION {FOR_NAMES}(text[])")
    if not has_pg_trgm():
        empty = FUNCTION.format(
            name=FOR_MEMBERS, arguments="members jsonb", language="plpgsql", body="BEGIN END"
        )
        op.execute(empty)
        return
    create_functions(KEYS, MEMBER_ROWS, (FOR_MEMBERS, "members jsonb"))
    present = {row[0] for row in op.get_bind().execute(text(TRIGGERS))}
    for event in ("insert", "update"):
        if f"crew_name_trigrams_on_{event}" not in present:
            op.execute(TRIGGER.format(event=event))
    op.execute(f"SELECT {REBUILD}()")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {FOR_MEMBERS}(jsonb)")
    for key in KEYS[1:]:
        for end in ("lowest", "highest"):
            op.drop_column("crew_name_trigrams", f"{end}_{key}")
    if not has_pg_trgm():
        empty = FUNCTION.format(
            name=FOR_NAMES, arguments="names text[]", language="plpgsql", body="BEGIN END"
        )
        op.execute(empty)
        return
    create_functions(KEYS[:1], NAME_ROWS, (FOR_NAMES, "names text[]"))
