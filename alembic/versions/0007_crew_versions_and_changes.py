"""crew versions (SCD type 2), dry-run change lists, the dry_run flag of a run

Every existing crew row gets one open version, valid from its `updated_at`, opened by no run.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
INSERT INTO crew_versions (
    crew_id, valid_from, op, name, status, agency, image, wikipedia, launches,
    created_at, deleted_at
)
SELECT id, updated_at, CASE WHEN deleted_at IS NULL THEN 'insert' ELSE 'delete' END,
       name, status, agency, image, wikipedia, launches, created_at, deleted_at
FROM crew
"""


def upgrade() -> None:
    op.add_column(
        "ingest_runs", sa.Column("dry_run", sa.Boolean(), server_default="false", nullable=False)
    )
    op.create_table(
        "crew_versions",
        sa.Column("crew_id", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_run_id", sa.Integer(), nullable=True),
        sa.Column("closed_run_id", sa.Integer(), nullable=True),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agency", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("image", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("wikipedia", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column(
            "launches", postgresql.ARRAY(sa.String(length=24)), server_default="{}", nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("crew_id", "valid_from"),
    )
    op.execute(BACKFILL)
    op.create_index("ix_crew_versions_opened_run", "crew_versions", ["opened_run_id", "crew_id"])
    op.create_index(
        "ix_crew_versions_closed_valid_to",
        "crew_versions",
        ["valid_to"],
        postgresql_where=sa.text("valid_to IS NOT NULL"),
    )
    op.create_table(
        "ingest_changes",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("crew_id", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("changed", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["ingest_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "crew_id"),
    )


def downgrade() -> None:
    op.drop_table("ingest_changes")
    op.drop_index("ix_crew_versions_closed_valid_to", table_name="crew_versions")
    op.drop_index("ix_crew_versions_opened_run", table_name="crew_versions")
    op.drop_table("crew_versions")
    op.drop_column("ingest_runs", "dry_run")
