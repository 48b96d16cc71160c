"""crew_name_trigrams_widen_for_names(names): widen the name bounds for given names

A first load builds its rows in a table of their own and moves it in as `crew` at the end
(app/ingest/bulk.py). Its names must be covered by the bounds (migration 0012) before the move,
which holds a lock readers wait on, so the widening cannot read them from `crew` the way
crew_name_trigrams_widen_for_run() does. This function widens for the names it is given, by the
same rule. Servers without pg_trgm get a function that does nothing, as in 0012.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "crew_name_trigrams_widen_for_names"
# As 0012's WIDEN, over the names given (name_folded is lower(name), as in crew).
WIDEN = """
WITH names AS (
    SELECT name, lower(name) AS name_folded FROM unnest(names) AS name
), seen AS (
    SELECT trigram, min(w.name) AS lowest_name, max(w.name) AS highest_name
    FROM names AS w, unnest(show_trgm(w.name_folded)) AS trigram
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
# enable_sort = off: see 0012 (millions of (trigram, name) pairs, grouped by hashing).
FUNCTION = """
CREATE FUNCTION {name}(names text[]) RETURNS void LANGUAGE {language}
SET enable_sort = off AS $$
{body}
$$
"""


def has_pg_trgm() -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    if has_pg_trgm():
        op.execute(FUNCTION.format(name=NAME, language="sql", body=WIDEN))
    else:
        op.execute(FUNCTION.format(name=NAME, language="plpgsql", body="BEGIN END"))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {NAME}(text[])")
