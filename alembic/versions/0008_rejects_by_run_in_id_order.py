"""rejects of a run in id order from one index (the status page reads a run's first rejects)

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # (run_id, id) serves everything (run_id) did: the cascade from ingest_runs and the count.
    op.create_index("ix_ingest_rejects_run_id_id", "ingest_rejects", ["run_id", "id"])
    op.drop_index("ix_ingest_rejects_run_id", table_name="ingest_rejects")


def downgrade() -> None:
    op.create_index("ix_ingest_rejects_run_id", "ingest_rejects", ["run_id"])
    op.drop_index("ix_ingest_rejects_run_id_id", table_name="ingest_rejects")
