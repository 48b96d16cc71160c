"""run cancellation: the cancelled status and the cancel request flag

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed')"
NEW_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def upgrade() -> None:
    op.add_column(
        "ingest_runs",
        sa.Column("cancel_requested", sa.Boolean(), server_default="false", nullable=False),
    )
    op.drop_constraint("ck_ingest_runs_status", "ingest_runs", type_="check")
    op.create_check_constraint("ck_ingest_runs_status", "ingest_runs", NEW_STATUSES)


def downgrade() -> None:
    op.execute(
        "UPDATE ingest_runs SET status = 'failed', error = 'cancelled' WHERE status = 'cancelled'"
    )
    op.drop_constraint("ck_ingest_runs_status", "ingest_runs", type_="check")
    op.create_check_constraint("ck_ingest_runs_status", "ingest_runs", OLD_STATUSES)
    op.drop_column("ingest_runs", "cancel_requested")
