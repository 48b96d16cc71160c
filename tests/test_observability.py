"""Prometheus metrics and JSON logs of ingest runs."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_upstream import FakeUpstream, Fault


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_ingest_metrics_count_runs_records_pages_and_retries(
    client: TestClient, upstream: FakeUpstream
) -> None:
    before = scrape(client)
    upstream.fail(2, Fault("status", status=503))
    client.post("/ingest")
    upstream.fail(1, Fault("status", status=404))
    client.post("/ingest")
    after = scrape(client)

    assert delta(before, after, "crew_etl_ingest_runs_total", status="succeeded") == 1
    assert delta(before, after, "crew_etl_ingest_runs_total", status="failed") == 1
    assert delta(before, after, "crew_etl_ingest_records_total", outcome="inserted") == 18
    assert delta(before, after, "crew_etl_ingest_records_total", outcome="unchanged") == 0
    assert delta(before, after, "crew_etl_ingest_pages_fetched_total") == 4
    assert delta(before, after, "crew_etl_upstream_retries_total", reason="http_503") == 1
    assert delta(before, after, "crew_etl_ingest_run_duration_seconds_count") == 2
    assert after[("crew_etl_ingest_last_success_timestamp_seconds", ())] > 1.7e9


def test_http_metrics_per_route(client: TestClient) -> None:
    client.get("/crew")
    client.get("/crew/" + "0" * 24)

    samples = scrape(client)

    routes = {
        dict(labels).get("handler") for name, labels in samples if name == "http_requests_total"
    }
    assert {"/crew", "/crew/{crew_id}"} <= routes
    assert any(name == "http_request_duration_seconds_count" for name, _ in samples)


def test_every_ingest_log_line_is_json_with_the_run_id(
    client: TestClient, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    upstream.fail(3, Fault("status", status=502))
    capfd.readouterr()

    run_id = client.post("/ingest").json()["id"]

    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]
    run_lines = [
        line for line in lines if line["logger"] in ("crew_etl.ingest", "crew_etl.extract")
    ]
    events = [line["event"] for line in run_lines]
    assert events == ["run started", "upstream request retried", "run finished"]
    assert all(line["run_id"] == run_id for line in run_lines)
    started, retried = run_lines[0], run_lines[1]
    assert (started["trigger"], started["source_url"]) == ("api", f"{upstream.url}/v4/crew/query")
    assert {key: retried[key] for key in ("page", "attempt", "reason")} == {
        "page": 3,
        "attempt": 1,
        "reason": "http_502",
    }
    assert 0 <= retried["wait_seconds"] <= 1
    assert not {"args", "kwargs", "callable"} & retried.keys()
    summary = run_lines[-1]
    assert summary["status"] == "succeeded" and summary["duration_seconds"] > 0
    counts = ("records_fetched", "records_rejected", "rows_inserted", "rows_updated")
    assert [summary[name] for name in counts] == [18, 0, 18, 0]
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)
