"""Crew reads and an unreachable read replica: they fall back to the primary, and /readyz says
why without failing. Reads from a live, lagging and promoted replica are in test_topology.py."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app import db_routing
from app.config import settings
from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream, free_port


@pytest.fixture(name="unreachable_replica")
def unreachable_replica_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/crew_etl"
    monkeypatch.setattr(settings, "DATABASE_READ_URL", url)
    # measured by hand below, not by the checking thread: each test decides what was last seen
    monkeypatch.setattr(db_routing, "ensure_monitor", lambda: None)
    yield
    monkeypatch.undo()
    db_routing.replica_engine.cache_clear()
    db_routing.lag_engine.cache_clear()
    monkeypatch.setattr(db_routing, "_state", db_routing.NOT_MEASURED)


def test_reads_fall_back_to_the_primary_while_the_replica_is_unreachable(
    client: TestClient, upstream: FakeUpstream, unreachable_replica: None
) -> None:
    assert ingest(client)["status"] == "succeeded"
    state = db_routing.check_once()
    assert state.problem == "replica unreachable (OperationalError)"

    crew = client.get("/crew")
    ready = client.get("/readyz")

    assert crew.status_code == 200 and crew.json()["total"] == 18
    assert ready.status_code == 200
    assert ready.json()["replica"] == {
        "serving_reads": False,
        "lag_seconds": None,
        "problem": "replica unreachable (OperationalError)",
    }
    assert "crew_etl_replica_serving_reads 0.0" in client.get("/metrics").text


def test_a_replica_that_refuses_the_connection_is_passed_over_at_once(
    client: TestClient, upstream: FakeUpstream, unreachable_replica: None
) -> None:
    assert ingest(client)["status"] == "succeeded"
    # as if the last check had found it well: the read itself finds it gone
    db_routing._state = db_routing.ReplicaState(0.0, None, float("inf"))

    crew = client.get("/crew")

    assert crew.status_code == 200 and crew.json()["total"] == 18
    assert db_routing.replica_state().problem == "replica unreachable (OperationalError)"
