"""The API contract, checked with tools this project did not write: openapi-spec-validator on the
document, openapi-schema-validator on each of its examples, openapi-core on every response the
test client receives (tests/contract.py). Also HEAD on every GET route, `Allow` on 405, and run
ids that a refused run does not use up."""

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from openapi_core.templating.paths.exceptions import PathNotFound
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.response.exceptions import InvalidData, MissingRequiredHeader
from openapi_schema_validator import OAS31Validator, validate
from openapi_spec_validator import validate as validate_spec
from sqlmodel import Session

from app.db import get_engine
from app.ingest import service
from app.main import app
from app.models import RunTrigger
from tests.conftest import ingest
from tests.contract import Contract, expect_undeclared
from tests.fake_upstream import FakeUpstream

FASTAPI_OWN = {"HTTPValidationError", "ValidationError"}
# Bodies that say when they were made: the same headers, a length that may differ by a digit.
TIMED_BODIES = {"/", "/status", "/metrics"}
ETAG = {"ETag": '"1"', "Cache-Control": "no-cache"}


def document() -> dict[str, Any]:
    return app.openapi()


def test_the_document_passes_openapi_spec_validator() -> None:
    validate_spec(document())  # raises on the first violation


def examples_in(doc: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(where, example, schema) for every example of a schema, property or parameter."""
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield name, example, schema
        for field, prop in schema.get("properties", {}).items():
            for example in prop.get("examples", []):
                yield f"{name}.{field}", example, prop
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                for example in parameter.get("examples", {}).values():
                    where = f"{method.upper()} {path} {parameter['name']}"
                    yield where, example["value"], parameter["schema"]


def test_every_example_fits_its_schema() -> None:
    doc = document()
    checked = []
    for where, example, schema in examples_in(doc):
        rooted = {**schema, "components": doc["components"]}  # `$ref`s resolve from here
        validate(example, rooted, cls=OAS31Validator)
        checked.append(where)
    expected = {"CrewPublic", "CrewVersionPublic", "IngestRunPublic", "IngestRejectPublic"}
    assert expected <= set(checked) and checked.count("ChangePublic") == 2


def test_every_field_sent_is_required_and_every_enum_is_named() -> None:
    schemas = document()["components"]["schemas"]
    optional = {
        f"{name}.{field}"
        for name, schema in schemas.items()
        if name not in FASTAPI_OWN
        for field in set(schema.get("properties", {})) - set(schema.get("required", []))
    }
    assert optional == set()
    sort = schemas["CrewSort"]
    assert sort["x-enum-varnames"][:2] == ["NAME", "NAME_DESC"]
    assert len(sort["x-enum-varnames"]) == len(sort["enum"])
    assert schemas["Health"]["properties"]["status"] == {
        "$ref": "#/components/schemas/HealthStatus",
        "description": "`ok`, or `unavailable` with the failing checks",
    }
    assert schemas["IngestRejectPublic"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/RejectError"
    }


def test_every_database_operation_declares_its_503_and_short_operation_ids() -> None:
    operations = {
        operation["operationId"]: operation
        for path in document()["paths"].values()
        for operation in path.values()
    }
    assert set(operations) >= {
        "list_crew",
        "get_crew_member",
        "get_crew_history",
        "start_ingest",
        "list_ingest_runs",
        "get_ingest_run",
        "list_ingest_rejects",
        "list_ingest_changes",
        "cancel_ingest_run",
        "get_status",
        "get_status_page",
        "get_liveness",
        "get_readiness",
    }
    for operation_id, operation in operations.items():
        if operation_id in {"get_liveness", "get_readiness"}:
            continue  # no database, or readiness's own 503 (Health)
        unavailable = operation["responses"]["503"]
        assert unavailable["headers"]["Retry-After"]["required"] is True, operation_id
        assert unavailable["headers"]["Retry-After"]["schema"]["type"] == "integer"


def get_paths(run_id: int, crew_id: str) -> list[str]:
    """Every GET route of the app, documented or not, with its path parameters filled in."""
    documented = [path for path, ops in document()["paths"].items() if "get" in ops]
    hidden = [
        route.path
        for route in app.router.routes
        if "GET" in (getattr(route, "methods", None) or ()) and not route.include_in_schema  # type: ignore[attr-defined]
    ]
    return [
        path.replace("{run_id}", str(run_id)).replace("{crew_id}", crew_id)
        for path in documented + hidden
    ]


def test_head_answers_every_get_route_with_its_headers_and_no_body(
    client: TestClient, upstream: FakeUpstream
) -> None:
    run = ingest(client)
    crew_id = upstream.records[0]["id"]
    paths = get_paths(run["id"], crew_id)
    assert {"/healthz", f"/crew/{crew_id}/history", "/metrics"} <= set(paths)
    for path in paths:
        got = client.get(path)
        head = client.head(path)  # the contract hook checks it as its GET, headers only
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert got.status_code == 200 and got.content, path
        if path in TIMED_BODIES:
            assert head.headers["content-length"].isdigit(), path
            del got.headers["content-length"], head.headers["content-length"]
        assert head.headers == got.headers, path

    conditional = client.head("/crew", headers={"If-None-Match": got_etag(client)})
    assert (conditional.status_code, conditional.content) == (304, b"")
    missing = client.head("/crew/ffffffffffffffffffffffff")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


def got_etag(client: TestClient) -> str:
    return client.get("/crew").headers["etag"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/crew", "GET, HEAD"),
        ("PUT", "/ingest", "GET, HEAD, POST"),
        ("GET", "/ingest/1/cancel", "POST"),
        ("HEAD", "/ingest/1/cancel", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
def test_405_lists_the_allowed_methods(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    with expect_undeclared(client):
        response = client.request(method, path)
    assert (response.status_code, response.headers["allow"]) == (405, allow)


def test_the_contract_hook_fails_an_undeclared_response(client: TestClient) -> None:
    contract = Contract(app)
    request = httpx.Request("GET", "http://testserver/crew")
    with pytest.raises(ResponseNotFound):  # a status /crew does not declare
        contract.check(httpx.Response(418, json={"detail": "teapot"}, request=request))
    with pytest.raises(MissingRequiredHeader):  # a 503 without its Retry-After
        contract.check(httpx.Response(503, json={"detail": "x", "cause": "y"}, request=request))
    with pytest.raises(InvalidData):  # a body of the wrong shape
        contract.check(httpx.Response(200, json={"items": []}, headers=ETAG, request=request))
    with pytest.raises(PathNotFound):
        contract.check(httpx.Response(404, request=httpx.Request("GET", "http://testserver/x")))
    with pytest.raises(PathNotFound):  # the fixture's client carries the same check
        client.get("/nowhere")


def test_validators_built_once_still_check_every_response(client: TestClient) -> None:
    """tests/contract.py keeps one validator per schema: it must judge each value anew."""
    contract = Contract(app)
    request = httpx.Request("GET", "http://testserver/crew")
    sent = client.get("/crew")
    page = sent.json()
    headers = {k: v for k, v in sent.headers.items() if k not in ("content-length", "content-type")}
    for _ in range(2):
        contract.check(httpx.Response(200, json=page, headers=headers, request=request))
        with pytest.raises(InvalidData):
            wrong = {**page, "total": "many"}
            contract.check(httpx.Response(200, json=wrong, headers=headers, request=request))


def test_a_refused_run_uses_up_no_id(client: TestClient, session: Session) -> None:
    queued = service.create_run(session, RunTrigger.api)  # stays queued: nothing executes it
    for _ in range(3):
        conflict = client.post("/ingest")
        assert conflict.status_code == 409
        assert conflict.headers["location"] == f"/ingest/{queued.id}"
    assert client.post(f"/ingest/{queued.id}/cancel").status_code == 202

    assert client.post("/ingest?dry_run=true").json()["id"] == queued.id + 1
    assert [run["id"] for run in client.get("/ingest").json()["items"]] == [2, 1]


def race_to_create(creators: int) -> tuple[list[int], list[int | None]]:
    """`creators` threads, each with its own session, call create_run at the same moment:
    (ids created, active run ids of the refusals)."""
    barrier = threading.Barrier(creators)
    created: list[int] = []
    refused: list[int | None] = []

    def create() -> None:
        with Session(get_engine()) as session:
            barrier.wait()
            try:
                created.append(service.create_run(session, RunTrigger.api).id or 0)
            except service.RunConflict as conflict:
                refused.append(conflict.active_run_id)

    threads = [threading.Thread(target=create) for _ in range(creators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return created, refused


def test_racing_creators_queue_one_run_at_a_time_with_contiguous_ids() -> None:
    creators = 6
    for round_number in range(1, 5):
        created, refused = race_to_create(creators)

        assert created == [round_number]  # one run, with the next id
        assert refused == [round_number] * (creators - 1)
        with Session(get_engine()) as session:
            service.cancel_run(session, round_number)
