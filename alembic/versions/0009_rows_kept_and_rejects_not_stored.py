"""rows_kept and rejects_not_stored on ingest runs

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("rows_kept", "rejects_not_stored")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column(
            "ingest_runs", sa.Column(name, sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    for name in COLUMNS:
        op.drop_column("ingest_runs", name)
