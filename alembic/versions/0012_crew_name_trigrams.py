"""crew_name_trigrams: where in name order each trigram of the folded names first and last occurs

`GET /crew?name=...&sort=name` walks the name index in order and keeps the names that contain
the text. Where every match sits late in name order (all names containing "vic" start with
Victor), the walk passed most of the table before its first match. A name that contains the
text contains each of its trigrams, so it sorts at or after the lowest name holding any one of
them: the walk starts at the highest of those lowest names (descending: mirrored).

The bounds must never pass a match, so they only ever widen. A trigger on crew widens them for
every row a statement inserts or updates, in the same transaction, whoever writes; a renamed or
deleted member leaves them wider than needed, which costs a longer walk, never a lost row. Only
trigrams of three ASCII letters or digits are kept: pg_trgm (`show_trgm`) makes those the same
way from any name that contains them, in any locale. A text without such a trigram, or with one
no name ever held, gets no bound.

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

# Bounds from the rows of `written`, merged in: a row changes only where a bound widens (most
# statements of a large load widen none), locked in trigram order.
WIDEN = """
INSERT INTO crew_name_trigrams AS b (trigram, lowest_name, highest_name)
SELECT trigram, min(w.name), max(w.name)
FROM {rows} AS w, unnest(show_trgm(w.name_folded)) AS trigram
WHERE trigram ~ '^[a-z0-9]{{3}}$'
GROUP BY trigram
ORDER BY trigram
ON CONFLICT (trigram) DO UPDATE
SET lowest_name = least(b.lowest_name, excluded.lowest_name),
    highest_name = greatest(b.highest_name, excluded.highest_name)
WHERE excluded.lowest_name < b.lowest_name OR excluded.highest_name > b.highest_name
"""

TRIGGER_FUNCTION = f"""
CREATE FUNCTION crew_name_trigrams_widen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{WIDEN.format(rows="written")};
RETURN NULL;
END
$$
"""


def has_pg_trgm() -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    op.create_table(
        "crew_name_trigrams",
        sa.Column("trigram", sa.String(3), primary_key=True),
        sa.Column("lowest_name", sa.String(200), nullable=False),
        sa.Column("highest_name", sa.String(200), nullable=False),
    )
    if not has_pg_trgm():
        return
    op.execute(TRIGGER_FUNCTION)
    # Transition tables need one trigger per event; an upsert fires both.
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER crew_name_trigrams_on_{event.lower()} AFTER {event} ON crew "
            "REFERENCING NEW TABLE AS written FOR EACH STATEMENT "
            "EXECUTE FUNCTION crew_name_trigrams_widen()"
        )
    op.execute(WIDEN.format(rows="crew"))


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS crew_name_trigrams_on_insert ON crew")
    op.execute("DROP TRIGGER IF EXISTS crew_name_trigrams_on_update ON crew")
    op.execute("DROP FUNCTION IF EXISTS crew_name_trigrams_widen()")
    op.drop_table("crew_name_trigrams")
