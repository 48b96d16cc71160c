"""crew.name_folded (lower(name), generated) and a name index that answers name sorts alone

`GET /crew?name=...&sort=name` walks the name index in order and keeps the rows whose name
contains the text, case-insensitively. Where the matches sit late in name order that walk passes
many rows, and each cost a heap visit plus an ILIKE, which lower-cases both sides every time. The
walk is now an index-only scan: the name index carries the folded name and the other filters'
columns but `launches` (status, agency, deleted_at), and the name filter is a plain LIKE on the
folded name. The trigram index moves to the folded name, which the filter now compares.

`launches` stays out of the name index: a btree entry holds at most 2,704 bytes, which a member
with about 80 launches would exceed, failing the whole load (and this migration, on such data).
Without it the longest entry is about 2,100 bytes: 200 four-byte characters of name, as many of
folded name, 100 of agency.

Adding a stored column rewrites the table under an exclusive lock: with the index builds, 1.9 s
at 200,000 rows (embedded PostgreSQL 18 on 2 cores; the downgrade 1.0 s).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def has_trigram_index() -> bool:
    query = text("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_crew_name_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    trigram = has_trigram_index()
    op.execute("DROP INDEX IF EXISTS ix_crew_name_trgm")
    op.drop_index("ix_crew_name_id", table_name="crew")
    op.execute(
        "ALTER TABLE crew ADD COLUMN name_folded text GENERATED ALWAYS AS (lower(name)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_crew_name_id ON crew (name, id) "
        "INCLUDE (name_folded, status, agency, deleted_at)"
    )
    if trigram:
        op.execute("CREATE INDEX ix_crew_name_trgm ON crew USING gin (name_folded gin_trgm_ops)")
    # Statistics for the new column, or the name filter's `total` is guessed from the pattern
    # alone (and counted exactly) until a large run analyzes the table.
    op.execute("ANALYZE crew")


def downgrade() -> None:
    trigram = has_trigram_index()
    op.execute("DROP INDEX IF EXISTS ix_crew_name_trgm")
    op.drop_index("ix_crew_name_id", table_name="crew")
    op.drop_column("crew", "name_folded")
    op.create_index("ix_crew_name_id", "crew", ["name", "id"])
    if trigram:
        op.execute("CREATE INDEX ix_crew_name_trgm ON crew USING gin (name gin_trgm_ops)")
