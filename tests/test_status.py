"""The status page at `/`: freshness states, its JSON form against the API, links, size, errors."""

import json
import re
from html import escape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.config import Settings, settings
from app.db import get_engine
from app.models import IngestRunPublic
from app.problems import UPSTREAM_HINT
from app.status.chart import nice_ceiling, run_chart
from app.status.summary import RunPoint
from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream, Fault, free_port

JSON = {"Accept": "application/json"}


def summary(client: TestClient) -> dict[str, Any]:
    response = client.get("/", headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def page(client: TestClient) -> str:
    response = client.get("/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def freshness_state(html: str) -> str:
    match = re.search(r'id="freshness" data-state="(\w+)"', html)
    assert match, "no freshness section"
    return match.group(1)


def execute(sql: str, **params: Any) -> None:
    with get_engine().begin() as connection:
        connection.execute(text(sql), params)


def test_fresh_after_a_successful_run(client: TestClient, upstream: FakeUpstream) -> None:
    run = ingest(client)

    body = summary(client)

    freshness = body["freshness"]
    assert freshness["state"] == "fresh"
    assert (freshness["last_success_run_id"], freshness["stale"]) == (run["id"], False)
    assert freshness["data_as_of"] == run["finished_at"]
    assert freshness["stale_after_seconds"] == 86_400  # no schedule: a day
    html = page(client)
    assert freshness_state(html) == "fresh"
    assert "Data is fresh" in html and f'href="/ingest/{run["id"]}">run {run["id"]}' in html
    assert "Last 1 run<" in html and freshness["hint"] is None


def test_stale_when_no_run_succeeded_within_the_window(
    client: TestClient, upstream: FakeUpstream
) -> None:
    run = ingest(client)
    execute(
        "UPDATE ingest_runs SET finished_at = now() - interval '25 hours' WHERE id = :id",
        id=run["id"],
    )

    freshness = summary(client)["freshness"]

    assert (freshness["state"], freshness["stale"]) == ("stale", True)
    assert 25 * 3600 <= freshness["age_seconds"] < 25 * 3600 + 60
    html = page(client)
    assert freshness_state(html) == "stale"
    assert "Data is stale" in html and "No run has succeeded for more than a day." in html


def test_stale_window_follows_the_schedule_or_the_setting(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ingest(client)
    execute(
        "UPDATE ingest_runs SET finished_at = now() - interval '30 minutes' WHERE id = :id",
        id=run["id"],
    )
    assert summary(client)["freshness"]["state"] == "fresh"  # within a day

    monkeypatch.setattr(settings, "INGEST_INTERVAL_SECONDS", 600)  # stale after 20 minutes
    assert summary(client)["freshness"]["stale_after_seconds"] == 1200
    assert summary(client)["freshness"]["state"] == "stale"

    monkeypatch.setattr(settings, "STATUS_STALE_AFTER_SECONDS", 3600)
    assert summary(client)["freshness"]["state"] == "fresh"


def test_stale_after_seconds_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None, INGEST_INTERVAL_SECONDS=0).stale_after_seconds == 86_400
    assert Settings(_env_file=None, INGEST_INTERVAL_SECONDS=900).stale_after_seconds == 1800
    explicit = Settings(_env_file=None, INGEST_INTERVAL_SECONDS=900, STATUS_STALE_AFTER_SECONDS=60)
    assert explicit.stale_after_seconds == 60
    monkeypatch.setenv("STATUS_STALE_AFTER_SECONDS", "")  # as compose passes an unset variable
    assert Settings(_env_file=None, INGEST_INTERVAL_SECONDS=900).stale_after_seconds == 1800


def test_never_succeeded_without_runs_and_after_only_failures(
    client: TestClient, upstream: FakeUpstream
) -> None:
    empty = summary(client)
    assert empty["freshness"]["state"] == "never_succeeded"
    assert (empty["last_run"], empty["recent_runs"], empty["crew"]["total"]) == (None, [], 0)
    assert "No run has succeeded yet" in page(client)

    upstream.fail(1, Fault("status", status=404))
    failed = ingest(client)

    body = summary(client)
    assert body["freshness"]["state"] == "never_succeeded"
    assert body["freshness"]["data_as_of"] is None
    assert body["last_run"]["run"]["id"] == failed["id"]
    assert freshness_state(page(client)) == "never_succeeded"


def test_last_failed_keeps_the_data_of_the_last_success(
    client: TestClient, upstream: FakeUpstream
) -> None:
    success = ingest(client)
    upstream.fail(1, Fault("status", status=404))
    failure = ingest(client)
    assert failure["status"] == "failed"

    body = summary(client)

    assert body["freshness"]["state"] == "last_failed"
    assert body["freshness"]["last_success_run_id"] == success["id"]
    assert body["last_run"]["run"]["error"] == "page 1: HTTP 404 Not Found"
    html = page(client)
    assert freshness_state(html) == "last_failed"
    assert 'id="last-run-status">failed<' in html
    assert "page 1: HTTP 404 Not Found" in html
    # the banner says what to do, as `crew-etl ingest` does
    assert body["freshness"]["hint"] == UPSTREAM_HINT
    assert f'<span id="freshness-hint">What to do: {escape(UPSTREAM_HINT)}.</span>' in html
    assert "Last 2 runs" in html


def test_a_cancelled_run_after_a_success_is_not_a_failure(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    execute(
        "INSERT INTO ingest_runs (status, trigger, source_url, error, created_at, finished_at,"
        " pages_fetched, records_fetched, records_valid, records_rejected, rows_inserted,"
        " rows_updated, rows_unchanged, rows_deleted)"
        " VALUES ('cancelled', 'api', 'x', 'cancelled on request', now(), now(), 0,0,0,0,0,0,0,0)"
    )
    assert summary(client)["freshness"]["state"] == "fresh"


def test_dry_runs_neither_refresh_the_data_nor_fail_it(
    client: TestClient, upstream: FakeUpstream
) -> None:
    real = ingest(client)
    execute(
        "UPDATE ingest_runs SET finished_at = now() - interval '25 hours' WHERE id = :id",
        id=real["id"],
    )
    dry = ingest(client, dry_run="true")
    assert (dry["status"], dry["dry_run"]) == ("succeeded", True)

    freshness = summary(client)["freshness"]
    assert (freshness["state"], freshness["last_success_run_id"]) == ("stale", real["id"])

    upstream.fail(1, Fault("status", status=404))
    assert ingest(client, dry_run="true")["status"] == "failed"
    assert summary(client)["freshness"]["state"] == "stale"
    assert "dry run (nothing written)" in page(client)


def test_json_matches_the_api_it_summarises(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.records[2] = {**upstream.records[2], "status": "on mars"}
    upstream.records[7] = {**upstream.records[7], "agency": None}
    upstream.records[8] = {**upstream.records[8], "agency": upstream.records[8]["agency"].upper()}
    ingest(client)
    upstream.records[2] = {**upstream.records[2], "status": "retired"}
    del upstream.records[5]  # soft-deleted by the next run
    upstream.fail(2, Fault("status", status=404))
    ingest(client)  # fails on page 2
    ingest(client)  # succeeds

    body = summary(client)

    runs = client.get("/ingest").json()["items"]
    assert [point["id"] for point in body["recent_runs"]] == [run["id"] for run in runs]
    assert [point["status"] for point in body["recent_runs"]] == [
        "succeeded",
        "failed",
        "succeeded",
    ]
    for point, run in zip(body["recent_runs"], runs, strict=True):
        assert (
            point["rows_changed"]
            == run["rows_inserted"] + run["rows_updated"] + run["rows_deleted"]
        )
    assert body["last_run"]["run"] == client.get(f"/ingest/{runs[0]['id']}").json()
    crew = body["crew"]
    assert (crew["total"], crew["deleted"]) == (17, 1)
    assert client.get(crew["total_url"]).json()["total"] == crew["total"]
    assert client.get(crew["deleted_url"]).json()["total"] == crew["total"] + crew["deleted"]
    links = crew["by_status"] + crew["by_agency"]
    assert {"label": None, "count": 1, "url": None} in crew["by_agency"]  # ?agency= is a 422
    assert {row["label"] for row in crew["by_status"]} == {
        "active",
        "inactive",
        "retired",
        "unknown",
    }
    assert sum(row["count"] for row in crew["by_agency"]) == crew["total"]
    for row in links:
        if row["url"] is not None:
            assert client.get(row["url"]).json()["total"] == row["count"], row
    assert body["service"] == {
        "name": "SpaceX crew ETL",
        "version": "0.1.0",
        "ready": True,
        "checks": {"database": True, "writable": True, "migrations": True, "recovery": True},
    }
    assert body["trigger"] == {
        "method": "POST",
        "path": "/ingest",
        "token_required": False,
        "schedule_interval_seconds": 0,
    }


def test_the_page_shows_every_count_of_the_last_run(
    client: TestClient, upstream: FakeUpstream
) -> None:
    run = ingest(client)
    html = page(client)

    shown = dict(re.findall(r'data-count="(\w+)"><dt>[^<]*</dt><dd>([\d,]+)</dd>', html))

    counts = {
        name: run[name]
        for name, field in IngestRunPublic.model_fields.items()
        if field.annotation is int and name != "id"
    }
    assert len(counts) >= 8
    assert {name: int(value.replace(",", "")) for name, value in shown.items()} == counts
    assert "<script" not in html  # nothing needs JavaScript
    assert 'rel="icon" href="data:,"' in html  # no favicon request


def test_first_ten_rejects_with_their_reasons(client: TestClient, upstream: FakeUpstream) -> None:
    for index in range(12):
        upstream.records[index] = {**upstream.records[index], "status": f"on mars {index}"}
    upstream.records[13] = {
        **upstream.records[13],
        "status": "x",
        "name": "",
        "launches": ["bad"] * 4,
    }

    run = ingest(client)

    rejects = summary(client)["last_run"]["rejects"]
    assert run["records_rejected"] == 13
    assert [r["record_id"] for r in rejects] == [upstream.records[i]["id"] for i in range(10)]
    assert rejects[0]["errors"] == [
        {
            "type": "enum",
            "loc": ["status"],
            "msg": "Input should be 'active', 'inactive', 'retired' or 'unknown'",
        }
    ]
    html = page(client)
    assert html.count("<code>status</code>: Input should be") == 10
    assert f'href="/ingest/{run["id"]}/rejects">all rejects (13)' in html


def test_many_errors_of_one_reject_are_cut_to_three(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.records[0] = {
        **upstream.records[0],
        "status": "x",
        "name": "",
        "launches": ["bad"] * 4,
    }

    ingest(client)

    (reject,) = summary(client)["last_run"]["rejects"]
    assert (reject["error_count"], len(reject["errors"])) == (6, 3)
    assert "and 3 more" in page(client)


def test_trigger_shows_the_header_when_a_token_is_set_never_the_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "Authorization" not in page(client)
    monkeypatch.setattr(settings, "INGEST_API_TOKEN", "s3cret-token-value")

    html = page(client)

    assert (
        'curl -X POST -H "Authorization: Bearer $INGEST_API_TOKEN" http://testserver/ingest' in html
    )
    assert "s3cret-token-value" not in html
    assert "s3cret-token-value" not in client.get("/", headers=JSON).text
    assert summary(client)["trigger"]["token_required"] is True


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        ("application/json", True),
        ("application/json, text/html;q=0.9", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("*/*", False),
        ("", False),
        ("text/html, application/json;q=0.5", False),
        ("application/json;q=abc", True),  # an unreadable q counts as 1
        ("application", False),  # malformed: the page, not an error
        (";;;", False),
        ("application/*", True),
    ],
)
def test_accept_header_chooses_json_or_html(
    client: TestClient, accept: str, json_wanted: bool
) -> None:
    response = client.get("/", headers={"Accept": accept})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/json" if json_wanted else "text/html"
    )
    assert response.headers["vary"] == "Accept"


def test_openapi_documents_html_and_json(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/"]["get"]
    content = operation["responses"]["200"]["content"]

    assert set(content) == {"application/json", "text/html"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/StatusSummary"}
    assert "503" in operation["responses"]


def test_hostile_data_is_escaped_and_the_page_stays_under_100_kb(client: TestClient) -> None:
    """Worst case for size: 50 runs with long errors, 10 rejects with long ids and many
    errors, many long agency names."""
    long_error = "<b>boom</b> " * 2000
    execute(
        "INSERT INTO ingest_runs (status, trigger, source_url, error, created_at, started_at,"
        " finished_at, pages_fetched, records_fetched, records_valid, records_rejected,"
        " rows_inserted, rows_updated, rows_unchanged, rows_deleted)"
        " SELECT 'failed', 'api', 'x', :error, now(), now() - i * interval '1 minute', now(),"
        " i, i, i, i, i * 1000, i, i, i FROM generate_series(1, 60) AS i",
        error=long_error,
    )
    errors = [{"type": "x", "loc": ["launches", i], "msg": "<i>m</i>" * 100} for i in range(50)]
    execute(
        "INSERT INTO ingest_rejects (run_id, record_id, errors, raw)"
        " SELECT 60, repeat('<r>', 5000), CAST(:errors AS jsonb), '{}'"
        " FROM generate_series(1, 20)",
        errors=json.dumps(errors),
    )
    execute(
        "INSERT INTO crew (id, name, status, agency)"
        " SELECT lpad(to_hex(i), 24, '0'), 'n' || i, 'active', :agency || i"
        " FROM generate_series(1, 500) AS i",
        agency="<script>alert(1)</script>" + "a" * 70,
    )

    response = client.get("/")

    assert response.status_code == 200
    assert len(response.content) < 100_000, len(response.content)
    html = response.text
    assert "<script>" not in html and "<b>boom" not in html and "<i>m" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert html.count('class="run s-failed"') == 50
    assert "488 other agencies" in html
    assert summary(client)["crew"]["other_agencies_members"] == 488


def test_database_down_answers_503_with_readiness(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api import health, status

    nowhere = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none")
    monkeypatch.setattr(status, "get_engine", lambda: nowhere)
    monkeypatch.setattr(health, "probe_engine", lambda: nowhere)

    html = client.get("/")
    data = client.get("/", headers=JSON)

    assert (html.status_code, data.status_code) == (503, 503)
    assert "Database unavailable" in html.text and "not ready" in html.text
    assert data.json()["detail"] == "database unavailable"
    assert data.json()["service"]["checks"]["database"] is False
    nowhere.dispose()


def test_crew_counts_follow_each_successful_run(client: TestClient, upstream: FakeUpstream) -> None:
    ingest(client)
    assert summary(client)["crew"]["total"] == 18
    del upstream.records[:3]
    upstream.records[3] = {**upstream.records[3], "status": "retired"}

    ingest(client)

    crew = summary(client)["crew"]
    assert (crew["total"], crew["deleted"]) == (15, 3)
    assert {row["label"]: row["count"] for row in crew["by_status"]}["retired"] == 1


def test_chart_has_one_mark_per_run_and_round_scales() -> None:
    points = [
        RunPoint(
            id=i,
            dry_run=False,
            status="succeeded",
            trigger="api",
            started_at=None,
            duration_seconds=i / 10,
            rows_changed=i * 2,
        )
        for i in range(7, 0, -1)
    ]

    chart = run_chart(points)

    assert [mark.run.id for mark in chart.marks] == list(range(1, 8))
    assert chart.marks[-1].x + chart.marks[-1].width < 100
    assert [tick.label for tick in chart.panels[0].ticks] == ["0 s", "500 ms", "1 s"]
    assert [tick.label for tick in chart.panels[1].ticks] == ["0", "10", "20"]
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 3, 1001, 150_000)] == [1, 1, 1, 5, 2000, 200_000]


def test_last_run_links_its_changes(client: TestClient, upstream: FakeUpstream) -> None:
    from app.api.status import route_path
    from app.main import app

    run = ingest(client)

    url = summary(client)["last_run"]["changes_url"]
    assert url == f"/ingest/{run['id']}/changes"
    assert f'<a href="{url}">changes</a>' in page(client)
    assert client.get(url).json()["total"] == run["rows_inserted"] == 18
    assert route_path(app, "no_such_route", run_id=1) is None  # no link where no route
