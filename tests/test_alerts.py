"""The alert rules shipped in deploy/prometheus: their promtool unit tests pass, and every series
and label value they use is one the service really exports on /metrics. And the metrics they
read tell the truth: a dry run moves neither freshness nor the loaded-rows counters."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.db import get_engine
from app.notify import freshness
from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
SERIES = re.compile(r"\b(crew_etl_[a-z0-9_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|=)\s*"([^"]*)"')


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    checked = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_rule_has_a_unit_test() -> None:
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert len(names) == 6
    for name in names:
        assert f"alertname: {name}\n        exp_alerts:\n          - exp_labels" in tests, name


def test_every_series_the_rules_use_is_exported(client: TestClient) -> None:
    exposed: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            exposed.setdefault(sample.name, []).append(sample.labels)
    used = [match for expr in rule_expressions() for match in SERIES.findall(expr)]
    assert len({name for name, _ in used}) == 9
    for name, matchers in used:
        assert name in exposed, f"{name} is used by an alert rule but not exported"
        for label, op, value in MATCHER.findall(matchers):
            values = {labels.get(label) for labels in exposed[name]}
            wanted = value.split("|") if op == "=~" else [value]
            missing = [one for one in wanted if one not in values]
            assert not missing, f"{name}{{{label}}} has no series for {missing}"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_dry_run_moves_neither_freshness_nor_loaded_rows(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    last_success = sample("crew_etl_ingest_last_success_timestamp_seconds")
    succeeded = sample("crew_etl_ingest_runs_total", status="succeeded")
    loaded = {
        outcome: sample("crew_etl_ingest_records_total", outcome=outcome)
        for outcome in ("inserted", "updated", "unchanged", "deleted", "rejected")
    }
    dry_before = sample("crew_etl_ingest_dry_runs_total", status="succeeded")
    upstream.records = [{**r, "agency": "changed"} for r in upstream.records[:10]]  # 8 deleted

    run = ingest(client, dry_run=True, allow_mass_delete=True)

    assert (run["status"], run["rows_updated"], run["rows_deleted"]) == ("succeeded", 10, 8)
    assert sample("crew_etl_ingest_last_success_timestamp_seconds") == last_success
    assert sample("crew_etl_ingest_runs_total", status="succeeded") == succeeded
    for outcome, before in loaded.items():
        assert sample("crew_etl_ingest_records_total", outcome=outcome) == before, outcome
    assert sample("crew_etl_ingest_dry_runs_total", status="succeeded") == dry_before + 1

    with get_engine().begin() as connection:  # what every replica reads from the database
        freshness.check(connection, 3600)
    assert sample("crew_etl_ingest_last_success_timestamp_seconds") == last_success
