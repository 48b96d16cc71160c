"""crew, ingest runs and rejects

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crew",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("agency", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("image", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("wikipedia", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column(
            "launches",
            postgresql.ARRAY(sa.String(length=24)),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_crew_agency_lower",
        "crew",
        [sa.literal_column("lower(agency)")],
        unique=False,
    )
    op.create_index("ix_crew_launches", "crew", ["launches"], unique=False, postgresql_using="gin")
    op.create_index(op.f("ix_crew_name"), "crew", ["name"], unique=False)
    op.create_index(op.f("ix_crew_status"), "crew", ["status"], unique=False)
    op.create_index("ix_crew_updated_at", "crew", ["updated_at"], unique=False)
    op.create_table(
        "ingest_runs",
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("pages_fetched", sa.Integer(), nullable=False),
        sa.Column("records_fetched", sa.Integer(), nullable=False),
        sa.Column("records_valid", sa.Integer(), nullable=False),
        sa.Column("records_rejected", sa.Integer(), nullable=False),
        sa.Column("rows_inserted", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_deleted", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "schema_drift",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allow_mass_delete", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=True),
        sa.Column("schedule_slot", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')",
            name="ck_ingest_runs_status",
        ),
    )
    op.create_index(op.f("ix_ingest_runs_status"), "ingest_runs", ["status"], unique=False)
    op.create_index(
        "ux_ingest_runs_one_active",
        "ingest_runs",
        [sa.literal_column("(true)")],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_index(
        "ux_ingest_runs_schedule_slot",
        "ingest_runs",
        ["schedule_slot"],
        unique=True,
        postgresql_where=sa.text("schedule_slot IS NOT NULL"),
    )
    op.create_table(
        "ingest_rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["run_id"], ["ingest_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ingest_rejects_run_id"), "ingest_rejects", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ingest_rejects_run_id"), table_name="ingest_rejects")
    op.drop_table("ingest_rejects")
    op.drop_index(
        "ux_ingest_runs_schedule_slot",
        table_name="ingest_runs",
        postgresql_where=sa.text("schedule_slot IS NOT NULL"),
    )
    op.drop_index(
        "ux_ingest_runs_one_active",
        table_name="ingest_runs",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.drop_index(op.f("ix_ingest_runs_status"), table_name="ingest_runs")
    op.drop_table("ingest_runs")
    op.drop_index("ix_crew_updated_at", table_name="crew")
    op.drop_index(op.f("ix_crew_status"), table_name="crew")
    op.drop_index(op.f("ix_crew_name"), table_name="crew")
    op.drop_index("ix_crew_launches", table_name="crew", postgresql_using="gin")
    op.drop_index("ix_crew_agency_lower", table_name="crew")
    op.drop_table("crew")
