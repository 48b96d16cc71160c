"""Examples for the OpenAPI document, taken from the recorded SpaceX snapshot
(tests/fixtures/crew_v4.json) and from a run that loaded it."""

from typing import Any

CREW_MEMBER: dict[str, Any] = {
    "id": "5ebf1a6e23a9a60006e03a7a",
    "name": "Robert Behnken",
    "status": "active",
    "agency": "NASA",
    "image": "https://imgur.com/0smMgMH.png",
    "wikipedia": "https://en.wikipedia.org/wiki/Robert_L._Behnken",
    "launches": ["5eb87d46ffd86e000604b388"],
    "created_at": "2026-11-26T12:34:29.838348Z",
    "updated_at": "2026-11-26T12:34:29.838348Z",
    "deleted_at": None,
}

INGEST_RUN: dict[str, Any] = {
    "id": 1,
    "status": "succeeded",
    "trigger": "api",
    "source_url": "https://api.spacexdata.com/v4/crew/query",
    "pages_fetched": 1,
    "records_fetched": 18,
    "records_valid": 18,
    "records_rejected": 0,
    "rows_inserted": 18,
    "rows_updated": 0,
    "rows_unchanged": 0,
    "rows_deleted": 0,
    "rows_kept": 0,
    "rejects_not_stored": 0,
    "error": None,
    "dry_run": False,
    "schema_drift": {"unknown_fields": {}, "missing_fields": {}},
    "created_at": "2026-11-26T12:34:29.412006Z",
    "started_at": "2026-11-26T12:34:29.431950Z",
    "finished_at": "2026-11-26T12:34:29.870114Z",
    "heartbeat_at": "2026-11-26T12:34:29.431950Z",
}

# The snapshot's Douglas Hurley, as a record arriving with a status the model does not know.
INGEST_REJECT: dict[str, Any] = {
    "id": 1,
    "run_id": 2,
    "record_id": "5ebf1b7323a9a60006e03a7b",
    "errors": [
        {
            "loc": ["status"],
            "msg": "Input should be 'active', 'inactive', 'retired' or 'unknown'",
            "type": "enum",
        }
    ],
    "raw": {
        "name": "Douglas Hurley",
        "agency": "NASA",
        "image": "https://i.imgur.com/ooaayWf.png",
        "wikipedia": "https://en.wikipedia.org/wiki/Douglas_G._Hurley",
        "launches": ["5eb87d46ffd86e000604b388"],
        "status": "on leave",
        "id": "5ebf1b7323a9a60006e03a7b",
    },
    "created_at": "2026-11-26T12:40:02.118502Z",
}
