"""crew_name_trigrams: where in name order each trigram of the folded names first and last occurs

`GET /crew?name=...&sort=name` walks the name index in order and keeps the names that contain
the text. Where every match sits late in name order (all names containing "vic" start with
Victor), the walk passed most of the table before its first match. A name that contains the
text contains each of its trigrams, so it sorts at or after the lowest name holding any one of
them: the walk starts at the highest of those lowest names (descending: mirrored).

The bounds must never pass a match, so they only ever widen, in the transaction that writes the
names: a trigger on crew for every statement that inserts or updates rows, but an ingest run's,
which widens once for all the rows it wrote before it commits. A renamed or deleted member leaves
them wider than needed, which costs a longer walk, never a lost row. Only trigrams of three
ASCII letters or digits are looked up: pg_trgm (`show_trgm`) makes those the same way from any
name that contains them, in any locale. A text without such a trigram, or with one no name ever
held, gets no bound.

Servers without pg_trgm get the table but no trigger: it stays empty, so no text gets a bound.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Widens the bounds to cover the names of the crew rows `rows` by appending a row per trigram
# whose bounds they move (after the first pages of a large load, hardly any). Appending takes no
# lock a concurrent writer could wait on (no unique key, no update): two transactions that both
# widen a trigram each add their row, and a reader takes the lowest and highest of them all.
# Pattern side (app/api/crew_query.py): only windows of three ASCII letters or digits are
# looked up; show_trgm makes those, unhashed, from every name that contains them. Other
# trigrams kept here are never looked up.
WIDEN = """
WITH seen AS (
    SELECT trigram, min(w.name) AS lowest_name, max(w.name) AS highest_name
    FROM {rows} AS w, unnest(show_trgm(w.name_folded)) AS trigram
    WHERE length(trigram) = 3 AND strpos(trigram, ' ') = 0
    GROUP BY trigram
)
INSERT INTO crew_name_trigrams (trigram, lowest_name, highest_name)
SELECT trigram, lowest_name, highest_name FROM seen AS s
WHERE NOT EXISTS (
    SELECT FROM crew_name_trigrams AS k
    WHERE k.trigram = s.trigram AND k.lowest_name <= s.lowest_name
) OR NOT EXISTS (
    SELECT FROM crew_name_trigrams AS k
    WHERE k.trigram = s.trigram AND k.highest_name >= s.highest_name
)
"""
# Every statement that writes crew widens for its rows, but an ingest run's statements: the run
# widens once for all the rows it wrote (they carry its now()), before it commits
# (app/ingest/load.py), which costs less than page by page.
ON_WRITE = f"""
CREATE FUNCTION crew_name_trigrams_on_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('crew_etl.name_bounds', true), '') <> 'by_run' THEN
        {WIDEN.format(rows="written")};
    END IF;
    RETURN NULL;
END
$$
"""
# The two functions below group many (trigram, name) pairs. A run's rows have no statistics
# yet: without `enable_sort = off` the planner expects a few and sorts the millions of pairs to
# group them (1.9 s instead of 1.2 for 200,000 names).
FUNCTION = """
CREATE FUNCTION {name}() RETURNS void LANGUAGE {language}
SET enable_sort = off AS $$
{body}
$$
"""
# Widens for the rows a run wrote (app/ingest/load.py).
WIDEN_FOR_RUN = "crew_name_trigrams_widen_for_run"
RUN_ROWS = "(SELECT name, name_folded FROM crew WHERE updated_at = now())"
# The bounds of the crew as they are now: the migration's fill, and what an operator runs to
# narrow bounds that renames left wide, or after writing crew with the trigger disabled.
REBUILD = "crew_name_trigrams_rebuild"


def has_pg_trgm() -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    op.create_table(
        "crew_name_trigrams",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("trigram", sa.String(3), nullable=False),
        sa.Column("lowest_name", sa.String(200), nullable=False),
        sa.Column("highest_name", sa.String(200), nullable=False),
    )
    op.create_index(
        "ix_crew_name_trigrams_lowest", "crew_name_trigrams", ["trigram", "lowest_name"]
    )
    op.create_index(
        "ix_crew_name_trigrams_highest", "crew_name_trigrams", ["trigram", "highest_name"]
    )
    if not has_pg_trgm():
        for name in (WIDEN_FOR_RUN, REBUILD):
            op.execute(FUNCTION.format(name=name, language="plpgsql", body="BEGIN END"))
        return
    widen_for_run = WIDEN.format(rows=RUN_ROWS)
    op.execute(FUNCTION.format(name=WIDEN_FOR_RUN, language="sql", body=widen_for_run))
    rebuild = "DELETE FROM crew_name_trigrams;" + WIDEN.format(rows="crew")
    op.execute(FUNCTION.format(name=REBUILD, language="sql", body=rebuild))
    op.execute(ON_WRITE)
    # Transition tables need one trigger per event; an upsert fires both.
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER crew_name_trigrams_on_{event.lower()} AFTER {event} ON crew "
            "REFERENCING NEW TABLE AS written FOR EACH STATEMENT "
            "EXECUTE FUNCTION crew_name_trigrams_on_write()"
        )
    op.execute(f"SELECT {REBUILD}()")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS crew_name_trigrams_on_insert ON crew")
    op.execute("DROP TRIGGER IF EXISTS crew_name_trigrams_on_update ON crew")
    op.execute("DROP FUNCTION IF EXISTS crew_name_trigrams_on_write()")
    for name in (WIDEN_FOR_RUN, REBUILD):
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("crew_name_trigrams")
