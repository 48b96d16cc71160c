"""ingest_run_events: each run's events (queued, started, a page loaded, cancelled, ended),
numbered per run, written by triggers in the statement that changes the run's record

Revision ID: 0014
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every writer of a run's record (its owner's progress and end, a cancel through any replica's
# API, the reaping of an abandoned run by any process) produces the event in its own statement:
# no round trip of its own, committed or rolled back with the change it reports. The number is
# taken under the run row's lock, so events commit in number order and a reader that sees one
# sees all before it. Heartbeats and cancel requests change neither column and fire nothing.
NUMBER_EVENT = """
CREATE FUNCTION number_ingest_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.event_seq := CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE OLD.event_seq + 1 END;
    RETURN NEW;
END $$
"""
RECORD_EVENT = """
CREATE FUNCTION record_ingest_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE
        WHEN TG_OP = 'INSERT' THEN 'queued'
        WHEN NEW.status IS DISTINCT FROM OLD.status THEN
            CASE NEW.status WHEN 'running' THEN 'started' WHEN 'cancelled' THEN 'cancelled'
                            ELSE 'ended' END
        ELSE 'page' END;
    at timestamptz := clock_timestamp();
    data jsonb := jsonb_build_object(
        'run_id', NEW.id, 'status', NEW.status,
        'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'pages_fetched', NEW.pages_fetched, 'records_fetched', NEW.records_fetched,
        'records_valid', NEW.records_valid, 'records_rejected', NEW.records_rejected);
BEGIN
    IF kind IN ('cancelled', 'ended') THEN  -- rows written are known once the run ends
        data := data || jsonb_build_object(
            'error', NEW.error, 'rows_inserted', NEW.rows_inserted,
            'rows_updated', NEW.rows_updated, 'rows_unchanged', NEW.rows_unchanged,
            'rows_deleted', NEW.rows_deleted, 'rows_kept', NEW.rows_kept);
    END IF;
    INSERT INTO ingest_run_events (run_id, seq, kind, data, created_at)
    VALUES (NEW.id, NEW.event_seq, kind, data, at);
    RETURN NULL;
END $$
"""
CHANGED = "OLD.status IS DISTINCT FROM NEW.status OR OLD.pages_fetched <> NEW.pages_fetched"
TRIGGERS = (
    "CREATE TRIGGER ingest_run_event_number_on_insert BEFORE INSERT ON ingest_runs "
    "FOR EACH ROW EXECUTE FUNCTION number_ingest_run_event()",
    f"CREATE TRIGGER ingest_run_event_number_on_update BEFORE UPDATE ON ingest_runs "
    f"FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION number_ingest_run_event()",
    # AFTER: the event's foreign key needs the run's row in place
    "CREATE TRIGGER ingest_run_event_on_insert AFTER INSERT ON ingest_runs "
    "FOR EACH ROW EXECUTE FUNCTION record_ingest_run_event()",
    "CREATE TRIGGER ingest_run_event_on_update AFTER UPDATE ON ingest_runs "
    "FOR EACH ROW WHEN (OLD.event_seq <> NEW.event_seq) "
    "EXECUTE FUNCTION record_ingest_run_event()",
)


def upgrade() -> None:
    op.add_column(
        "ingest_runs",
        sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_table(
        "ingest_run_events",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("data", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["run_id"], ["ingest_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seq"),
    )
    op.execute(NUMBER_EVENT)
    op.execute(RECORD_EVENT)
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    for name in (
        "ingest_run_event_on_update",
        "ingest_run_event_on_insert",
        "ingest_run_event_number_on_update",
        "ingest_run_event_number_on_insert",
    ):
        op.execute(f"DROP TRIGGER {name} ON ingest_runs")
    op.execute("DROP FUNCTION record_ingest_run_event()")
    op.execute("DROP FUNCTION number_ingest_run_event()")
    op.drop_table("ingest_run_events")
    op.drop_column("ingest_runs", "event_seq")
