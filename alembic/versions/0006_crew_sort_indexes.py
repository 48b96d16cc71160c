"""crew indexes: one (sort key, id) btree per sort, each serving its filter too

Every list query orders by a sort key and then the id, and a keyset page starts after a
(key, id) pair, so each sort key is indexed together with the id: a page is a range scan that
stops after `limit` rows, however deep. The agency index is on the expression the agency filter
and sort both use, `coalesce(lower(agency), '')`; it replaces the two single-column agency
indexes and the `lower(agency)` one. The name, status and updated_at indexes gain the id.
Unchanged: the GIN index on `launches` (the launch filter) and the trigram index on `name`
(substring search, where pg_trgm exists).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AGENCY_KEY = "coalesce(lower(agency), '')"


def upgrade() -> None:
    for index in ("ix_crew_agency", "ix_crew_agency_lower", "ix_crew_name", "ix_crew_status"):
        op.drop_index(index, table_name="crew")
    op.drop_index("ix_crew_updated_at", table_name="crew")
    op.execute(f"CREATE INDEX ix_crew_agency_key_id ON crew ({AGENCY_KEY}, id)")
    op.create_index("ix_crew_name_id", "crew", ["name", "id"])
    op.create_index("ix_crew_status_id", "crew", ["status", "id"])
    op.create_index("ix_crew_updated_at_id", "crew", ["updated_at", "id"])


def downgrade() -> None:
    for index in ("ix_crew_agency_key_id", "ix_crew_name_id", "ix_crew_status_id"):
        op.drop_index(index, table_name="crew")
    op.drop_index("ix_crew_updated_at_id", table_name="crew")
    op.execute("CREATE INDEX ix_crew_agency_lower ON crew (lower(agency))")
    op.create_index("ix_crew_agency", "crew", ["agency"])
    op.create_index("ix_crew_name", "crew", ["name"])
    op.create_index("ix_crew_status", "crew", ["status"])
    op.create_index("ix_crew_updated_at", "crew", ["updated_at"])
