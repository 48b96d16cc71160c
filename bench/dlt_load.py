"""The same data loaded by dlt, the yardstick the ingest is compared with: a dlt resource that
walks the stand-in's `POST /v4/crew/query` by id, 1,000 a page (as the ingest does), merged on
`id` into PostgreSQL. Run in its own process by bench/loads.py: `python -m bench.dlt_load
UPSTREAM_URL DATABASE_URL`. Needs the `bench` dependency group (`uv sync --group bench`)."""

import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import dlt
import httpx
from sqlalchemy.engine import make_url

PAGE = 1000


def crew_pages(upstream_url: str) -> Iterator[list[dict[str, Any]]]:
    """Pages of the listing after the last id seen, until one says no more follow."""
    last: str | None = None
    with httpx.Client(base_url=upstream_url, timeout=60) as client:
        while True:
            query = {"_id": {"$gt": last}} if last else {}
            body = {"query": query, "options": {"sort": {"_id": 1}, "limit": PAGE}}
            page = client.post("/v4/crew/query", json=body).raise_for_status().json()
            if page["docs"]:
                yield page["docs"]
                last = page["docs"][-1]["id"]
            if not page["hasNextPage"]:
                return


def credentials(database_url: str) -> dict[str, Any]:
    """dlt's credentials for `database_url`. dlt insists on a password (a server that trusts the
    connection ignores the one given) and on a host: a unix socket (the embedded server's
    `?host=/dir`) stays in the query, where libpq lets it override the placeholder host."""
    url = make_url(database_url)
    return {
        "database": url.database,
        "username": url.username,
        "password": url.password or "unused",
        "host": url.host or "unix-socket",
        "port": url.port or 5432,
        "query": dict(url.query),
    }


def main(upstream_url: str, database_url: str) -> None:
    crew = dlt.resource(
        crew_pages(upstream_url), name="crew", write_disposition="merge", primary_key="id"
    )
    with tempfile.TemporaryDirectory(prefix="crew-bench-dlt-") as state:  # a first load each time
        pipeline = dlt.pipeline(
            pipeline_name="crew_bench",
            pipelines_dir=state,
            destination=dlt.destinations.postgres(credentials=credentials(database_url)),
            dataset_name="dlt_crew",
        )
        pipeline.run(crew)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
