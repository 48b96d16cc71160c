"""One format on every endpoint: RFC 3339 UTC timestamps ending in `Z`, one id pattern."""

import re
from typing import Any

from fastapi.testclient import TestClient

from app.models import HEX24
from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def timestamps(body: Any) -> list[str]:
    """Every value of a `*_at` key, anywhere in a JSON body (both sides of a change, too)."""
    found: list[str] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key.endswith("_at") and isinstance(value, dict):  # a change: before, after
                found += [side for side in value.values() if side is not None]
            elif key.endswith("_at") and value is not None:
                found.append(value)
            found += timestamps(value)
    elif isinstance(body, list):
        for value in body:
            found += timestamps(value)
    return found


def test_every_endpoint_writes_timestamps_in_one_format(
    client: TestClient, upstream: FakeUpstream, crew_records: list[dict[str, Any]]
) -> None:
    upstream.records = [*crew_records[:-1], {**crew_records[-1], "status": 42}]  # one reject
    run = ingest(client)
    upstream.records = crew_records[:3]
    second = ingest(client, allow_mass_delete="true")  # soft-deletes: deleted_at is set
    member = crew_records[0]["id"]
    bodies = {
        "POST /ingest": run,
        "GET /ingest": client.get("/ingest").json(),
        "GET /ingest/{id}": client.get(f"/ingest/{second['id']}").json(),
        "GET /ingest/{id}/rejects": client.get(f"/ingest/{run['id']}/rejects").json(),
        "GET /crew": client.get("/crew?include_deleted=true&limit=1000").json(),
        "GET /crew?sort=-updated_at": client.get("/crew?sort=-updated_at").json(),
        "GET /crew/{id}": client.get(f"/crew/{member}").json(),
        "GET /crew/{id} deleted": client.get(f"/crew/{crew_records[-2]['id']}").json(),
        "GET /crew/{id}/history": client.get(f"/crew/{crew_records[-2]['id']}/history").json(),
        "GET /ingest/{id}/changes": client.get(f"/ingest/{second['id']}/changes").json(),
    }
    for endpoint, body in bodies.items():
        found = timestamps(body)
        assert found or endpoint.endswith("changes"), f"{endpoint} has no timestamps"
        bad = [value for value in found if not RFC3339_UTC.match(value)]
        assert bad == [], f"{endpoint}: {bad[:3]}"
    deleted = [item["deleted_at"] for item in bodies["GET /crew"]["items"] if item["deleted_at"]]
    assert len(deleted) == 14  # 17 valid in the first run, 3 in the second


def test_one_id_pattern_in_the_schema_and_the_path(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    crew_id = schema["components"]["schemas"]["CrewPublic"]["properties"]["id"]["pattern"]
    parameters = schema["paths"]["/crew/{crew_id}"]["get"]["parameters"]
    path_id = next(p for p in parameters if p["name"] == "crew_id")["schema"]["pattern"]
    assert crew_id == path_id == HEX24
