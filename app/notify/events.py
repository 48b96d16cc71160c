"""What each outbox row announces: event types and their bodies. No HTTP, no SQL here.

A run's end becomes `ingest.run.succeeded|failed|cancelled` (a dry run
`ingest.dry_run.finished`), plus `ingest.schema.drifted` when a successful run met fields the
previous successful run did not. Every body is the Standard Webhooks envelope
`{"type", "timestamp", "data"}`, kept under MAX_BODY_BYTES; `slack_body` is the Slack form.
"""

import json
from datetime import datetime
from typing import Any

MAX_BODY_BYTES = 20_000
MAX_ERROR_CHARS = 1_000
RUN_FIELDS = (
    "id", "status", "trigger", "dry_run", "source_url", "created_at", "started_at", "finished_at",
    "pages_fetched", "records_fetched", "records_valid", "records_rejected", "rejects_not_stored",
    "rows_inserted", "rows_updated", "rows_unchanged", "rows_deleted", "rows_kept", "error",
)  # fmt: skip

# Why a run failed, from the start of the error it recorded (app/ingest writes these texts).
REASON_PREFIXES = (
    ("refusing to soft-delete", "mass_delete_refused"),
    ("refusing to load", "validation"),
    ("page ", "upstream"),
    ("database", "database"),
    ("timed out", "timeout"),
    ("abandoned", "abandoned"),
    ("interrupted", "interrupted"),
    ("run ", "abandoned"),  # "run N was ended by another process"
)


def reason_kind(error: str | None) -> str:
    """One of upstream, validation, mass_delete_refused, database, timeout, abandoned,
    interrupted; `internal` for anything else (a bug: its details are in the log)."""
    text = (error or "").lower()
    return next((kind for prefix, kind in REASON_PREFIXES if text.startswith(prefix)), "internal")


def links(run_id: int, base_url: str | None) -> dict[str, str]:
    base = f"{base_url or ''}/ingest/{run_id}"
    return {"run": base, "rejects": f"{base}/rejects", "changes": f"{base}/changes"}


def run_data(run: dict[str, Any], base_url: str | None) -> dict[str, Any]:
    """The run's record as events carry it: counts, timings, error (cut), links."""
    data = {name: run[name] for name in RUN_FIELDS}
    error = data["error"]
    if error and len(error) > MAX_ERROR_CHARS:
        data["error"] = error[:MAX_ERROR_CHARS] + "… (cut; the run's record has it in full)"
    started, finished = run["started_at"], run["finished_at"]
    data["duration_seconds"] = (
        round((finished - started).total_seconds(), 3) if started and finished else None
    )
    if run["status"] == "failed":
        data["reason_kind"] = reason_kind(error)
    data["schema_drift"] = run["schema_drift"]
    data["links"] = links(run["id"], base_url)
    return data


def new_drift(current: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, list[str]]:
    """Fields unknown or missing in this run that the previous successful run did not report."""
    before = previous or {}
    found = {
        kind: sorted(set(current.get(kind, {})) - set(before.get(kind, {})))
        for kind in ("unknown_fields", "missing_fields")
    }
    return {kind: names for kind, names in found.items() if names}


def run_events(
    run: dict[str, Any], previous_drift: dict[str, Any] | None, base_url: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """The events of one run's end, before WEBHOOK_EVENTS filters them."""
    data = run_data(run, base_url)
    if run["dry_run"]:
        return [("ingest.dry_run.finished", data)]
    events = [(f"ingest.run.{run['status']}", data)]
    drift = new_drift(run["schema_drift"], previous_drift) if run["status"] == "succeeded" else {}
    if drift:
        drifted = {**drift, "run": {k: data[k] for k in ("id", "finished_at", "links")}}
        events.append(("ingest.schema.drifted", drifted))
    return events


def envelope(event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks body, under MAX_BODY_BYTES: an oversized schema drift is left out
    (the run's record has it)."""
    body = {"type": event_type, "timestamp": at.isoformat(), "data": data}
    if len(encode(body)) <= MAX_BODY_BYTES:
        return body
    drift = data.get("schema_drift") or {}
    summary = {kind: len(names) for kind, names in drift.items()}
    data = {**data, "schema_drift": {"cut": True, "field_counts": summary}}
    for kind in ("unknown_fields", "missing_fields"):
        if isinstance(data.get(kind), list):
            data[kind] = data[kind][:50]
    return {**body, "data": data}


def encode(body: dict[str, Any]) -> bytes:
    """The bytes sent and signed: compact JSON, timestamps as ISO 8601."""
    return dumps(body).encode()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=iso, ensure_ascii=False)


def iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def slack_body(body: dict[str, Any]) -> dict[str, str]:
    """A Slack incoming-webhook message: one line saying what happened, and where to look."""
    data = body["data"]
    kind = body["type"]
    link = data.get("links", {}).get("run") or data.get("run", {}).get("links", {}).get("run")
    texts = {
        "ingest.run.failed": lambda: (
            f"run {data['id']} failed ({data.get('reason_kind')}): {data['error']}"
        ),
        "ingest.run.succeeded": lambda: (
            f"run {data['id']} succeeded: "
            f"{data['rows_inserted']} inserted, {data['rows_updated']} updated, "
            f"{data['rows_deleted']} deleted"
        ),
        "ingest.run.cancelled": lambda: f"run {data['id']} was cancelled: {data['error']}",
        "ingest.dry_run.finished": lambda: f"dry run {data['id']} ended {data['status']}",
        "ingest.schema.drifted": lambda: (
            "the upstream's fields changed: "
            f"new unknown {data.get('unknown_fields', [])}, newly missing "
            f"{data.get('missing_fields', [])}"
        ),
        "ingest.freshness.stale": lambda: (
            "no successful run for "
            f"{data['stale_for_seconds']:.0f} s (last: {data['last_success_at']})"
        ),
        "ingest.freshness.recovered": lambda: f"fresh again: run {data['run_id']} succeeded",
        "ingest.schedule.paused": lambda: f"the schedule was paused ({data['reason']})",
        "ingest.schedule.resumed": lambda: f"the schedule was resumed ({data['reason']})",
    }
    line = texts[kind]() if kind in texts else kind
    shown = f" <{link}>" if link and link.startswith("http") else ""
    return {"text": f"crew-etl: {line}{shown}"}
