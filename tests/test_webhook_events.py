"""What an event says: the failure kinds, the size cap, the Slack line (no database, no HTTP)."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.notify import events


def a_run(**changes: Any) -> dict[str, Any]:
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    run = dict.fromkeys(events.RUN_FIELDS, 0)
    run.update(id=7, status="failed", trigger="schedule", dry_run=False, source_url="u")
    run.update(created_at=at, started_at=at, finished_at=at, error=None, schema_drift={})
    return {**run, **changes}


def test_each_failure_has_its_kind() -> None:
    errors = {
        "page 3: HTTP 503 after 5 attempts": "upstream",
        "refusing to load: 9 of 10 records rejected (more than ...)": "validation",
        "refusing to soft-delete 10 of 18 active crew (more than ...)": "mass_delete_refused",
        "database connection lost while loading (OperationalError); details": "database",
        "timed out: the run passed INGEST_RUN_TIMEOUT_SECONDS (3600 s) on page 2": "timeout",
        "abandoned: no heartbeat since 2026-12-06T12:00:00Z": "abandoned",
        "interrupted: received SIGTERM": "interrupted",
        "internal error (KeyError); details in the log": "internal",
    }
    assert {error: events.reason_kind(error) for error in errors} == errors


def test_a_huge_error_and_drift_stay_under_20_kb() -> None:
    drift = {
        "unknown_fields": {f"field_{i:03}_" + "x" * 90: 1 for i in range(100)},
        "missing_fields": {f"gone_{i:03}_" + "y" * 90: 1 for i in range(100)},
    }
    run = a_run(error="e" * 100_000, schema_drift=drift)
    body = events.envelope("ingest.run.failed", run["finished_at"], events.run_data(run, None))
    encoded = events.encode(body)
    assert len(encoded) < events.MAX_BODY_BYTES
    data = body["data"]
    assert data["error"].startswith("e" * 1000) and len(data["error"]) < 1100
    assert data["schema_drift"] == {
        "cut": True,
        "field_counts": {"unknown_fields": 100, "missing_fields": 100},
    }
    assert data["links"]["run"] == "/ingest/7" and data["reason_kind"] == "internal"


def test_only_fields_new_since_the_last_success_are_drift() -> None:
    previous = {"unknown_fields": {"nickname": 3}}
    current = {"unknown_fields": {"nickname": 3, "callsign": 1}, "missing_fields": {"image": 2}}
    assert events.new_drift(current, previous) == {
        "unknown_fields": ["callsign"],
        "missing_fields": ["image"],
    }
    assert events.new_drift(previous, previous) == {}


def test_slack_line_links_the_run_when_the_base_url_is_known() -> None:
    run = a_run(error="page 1: HTTP 500 after 3 attempts")
    data = events.run_data(run, "https://crew.example.com")
    body = events.envelope("ingest.run.failed", run["finished_at"], data)
    assert events.slack_body(body) == {
        "text": "crew-etl: run 7 failed (upstream): page 1: HTTP 500 after 3 attempts "
        "<https://crew.example.com/ingest/7>"
    }


def settings_from(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def test_webhook_settings_are_comma_separated_and_checked() -> None:
    secret = "whsec_" + "A" * 32
    loaded = settings_from(
        WEBHOOK_URL="https://a.example/h, http://b.example",
        WEBHOOK_SECRET=secret,
        WEBHOOK_RETRY_SCHEDULE_SECONDS="1,2.5",
    )
    assert loaded.WEBHOOK_URL == ["https://a.example/h", "http://b.example"]
    assert loaded.WEBHOOK_RETRY_SCHEDULE_SECONDS == [1.0, 2.5]
    assert "ingest.run.succeeded" not in loaded.WEBHOOK_EVENTS
    assert "ingest.run.failed" in loaded.WEBHOOK_EVENTS

    with pytest.raises(ValidationError, match="set WEBHOOK_SECRET"):
        settings_from(WEBHOOK_URL="https://a.example/h")
    with pytest.raises(ValidationError, match="unknown event types") as unknown:
        settings_from(WEBHOOK_EVENTS="ingest.run.failed,ingest.run.exploded")
    assert "ingest.run.exploded" in str(unknown.value)
    with pytest.raises(ValidationError, match="whsec_ followed by base64") as bad:
        settings_from(WEBHOOK_URL="https://a.example/h", WEBHOOK_SECRET="whsec_!!t0ps3cret")
    assert "t0ps3cret" not in str(bad.value)  # a secret never reaches an error message
    assert settings_from(WEBHOOK_URL="https://hooks.slack.example/x", WEBHOOK_FORMAT="slack")
