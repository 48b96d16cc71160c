"""Webhook outbox, deliveries and attempts; the schedule's paused state

A trigger writes the outbox row of a run's end in the transaction that records that end,
whichever path ends it (success, failure, cancel, a reaped run), so no end goes unannounced and
none is announced for a transaction that rolled back.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = """
-- What happened and must be told: a run ended, the schedule was paused, the data went stale.
-- The delivery worker turns each row into one delivery per configured receiver and event.
CREATE TABLE webhook_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    run_id integer REFERENCES ingest_runs (id) ON DELETE CASCADE,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    fanned_out_at timestamptz
);
CREATE INDEX ix_webhook_outbox_waiting ON webhook_outbox (id) WHERE fanned_out_at IS NULL;

-- One event for one receiver. The receiver's URL stays in the configuration (it may carry a
-- token): the row keeps its hash and a redacted form. `msg_id` is the webhook-id of every
-- attempt, so a receiver deduplicates retries.
CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id bigint NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    msg_id text NOT NULL UNIQUE,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    url_key text NOT NULL,
    url_redacted text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'gone')),
    attempts integer NOT NULL DEFAULT 0,
    retry_base integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_by bigint,
    claimed_until timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX ix_webhook_deliveries_status_id ON webhook_deliveries (status, id);

-- Every attempt, recorded before it is sent (claimed) and completed with the answer.
CREATE TABLE webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    url_redacted text NOT NULL,
    response_status integer,
    latency_ms double precision,
    error text,
    UNIQUE (delivery_id, attempt)
);

-- Receivers that answered 410 Gone: nothing more is sent to them until they are configured
-- again (another URL or secret) or a delivery to them is redelivered by hand.
CREATE TABLE webhook_gone_urls (
    url_key text PRIMARY KEY,
    url_redacted text NOT NULL,
    gone_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row each: whether the schedule is paused, and whether the current stale period has been
-- announced (once per period).
CREATE TABLE schedule_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    paused boolean NOT NULL DEFAULT false,
    reason text,
    changed_at timestamptz
);
INSERT INTO schedule_state DEFAULT VALUES;
CREATE TABLE webhook_freshness (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    stale_announced_at timestamptz
);
INSERT INTO webhook_freshness DEFAULT VALUES;
"""

RUN_END_TRIGGER = """
CREATE FUNCTION webhook_outbox_run_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_outbox (kind, run_id) VALUES ('run.ended', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER ingest_runs_ended AFTER UPDATE OF status ON ingest_runs FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION webhook_outbox_run_ended();
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(RUN_END_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER ingest_runs_ended ON ingest_runs")
    op.execute("DROP FUNCTION webhook_outbox_run_ended()")
    op.execute(
        "DROP TABLE webhook_freshness, schedule_state, webhook_gone_urls, webhook_attempts, "
        "webhook_deliveries, webhook_outbox"
    )
