"""trigram index for substring search on crew names, where pg_trgm is available

Servers without the contrib extensions keep the plain name index (the embedded PostgreSQL and
the postgres image both ship pg_trgm);
`GET /crew?name=` still works there, by a sequential scan.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def pg_trgm_available() -> bool:
    query = text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    return op.get_bind().execute(query).first() is not None


def upgrade() -> None:
    if pg_trgm_available():
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_crew_name_trgm ON crew USING gin (name gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_crew_name_trgm")
