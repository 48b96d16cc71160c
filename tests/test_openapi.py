"""The OpenAPI document explains itself: every field and every response has a description, and
the examples are the recorded snapshot's data, valid against their own schemas."""

from typing import Any

from fastapi.testclient import TestClient

from app import examples
from app.models import CrewPublic, IngestRejectPublic, IngestRunPublic
from tests.conftest import load_fixture

FASTAPI_OWN = {"HTTPValidationError", "ValidationError"}
GENERIC = {"", "Successful Response", "Not Found", "Additional Response"}


def openapi(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def test_every_schema_field_has_a_description(client: TestClient) -> None:
    schemas = openapi(client)["components"]["schemas"]
    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        if name not in FASTAPI_OWN
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []


def test_every_response_status_has_its_own_description(client: TestClient) -> None:
    paths = openapi(client)["paths"]
    generic = [
        f"{method.upper()} {path} {code}: {response.get('description')!r}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        for code, response in operation["responses"].items()
        if response.get("description", "") in GENERIC
    ]
    assert generic == []


def test_examples_come_from_the_snapshot_and_fit_their_schemas(client: TestClient) -> None:
    snapshot = {record["id"]: record for record in load_fixture()}
    member = {k: v for k, v in examples.CREW_MEMBER.items() if not k.endswith("_at")}
    assert member == snapshot[member["id"]]
    reject = examples.INGEST_REJECT["raw"]
    assert {**reject, "status": snapshot[reject["id"]]["status"]} == snapshot[reject["id"]]
    CrewPublic.model_validate(examples.CREW_MEMBER)
    IngestRunPublic.model_validate(examples.INGEST_RUN)
    IngestRejectPublic.model_validate(examples.INGEST_REJECT)

    schemas = openapi(client)["components"]["schemas"]
    for schema, example in (
        ("CrewPublic", examples.CREW_MEMBER),
        ("IngestRunPublic", examples.INGEST_RUN),
        ("IngestRejectPublic", examples.INGEST_REJECT),
    ):  # exactly as written, nulls included (app/api/document.py puts them back)
        assert schemas[schema]["examples"] == [example]
    envelope = schemas["CursorPage_CrewPublic_"]["properties"]
    assert envelope["total"]["examples"] == [18]


def test_a_reject_example_is_what_the_service_stores(client: TestClient, upstream: Any) -> None:
    """The reject example's `errors` have the shape a real reject's have."""
    records = load_fixture()
    upstream.records = [{**records[1], "status": "on leave"}, *records[2:]]
    run = client.post("/ingest").json()
    real = client.get(f"/ingest/{run['id']}/rejects").json()["items"][0]
    example = examples.INGEST_REJECT
    assert real["record_id"] == example["record_id"] and real["raw"] == example["raw"]
    assert [set(error) for error in real["errors"]] == [set(e) for e in example["errors"]]
    assert [error["loc"] for error in real["errors"]] == [["status"]]
