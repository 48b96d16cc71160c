"""planner_row_estimate(): the planner's row estimate for a query, callable inside a statement

`GET /crew` reports the planner's estimate as `total` when a filter matches many rows. As a
function it runs inside the same statement as the page, so one round trip and one snapshot
serve the items, the total and `total_exact`. It only plans its query (EXPLAIN without
ANALYZE), never runs it.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION planner_row_estimate(query text) RETURNS bigint
        LANGUAGE plpgsql STRICT AS $$
        DECLARE
            plan json;
        BEGIN
            EXECUTE 'EXPLAIN (FORMAT JSON) ' || query INTO plan;
            RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION planner_row_estimate(text)")
