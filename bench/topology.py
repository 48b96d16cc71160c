"""The production topology's rows, on servers of the bench's own (tests/topology_harness.py: a
PostgreSQL 15 primary, its streaming standby, PgBouncer in transaction mode in front of the
primary): the first ingest through PgBouncer against direct, each into an empty database, then
the same reads direct, through PgBouncer and from the replica, on the same data.

Skipped, with the reason as the row's note, where the topology cannot be built (no root, no
pgbouncer, no PostgreSQL 15 tools).
"""

import contextlib
from collections.abc import Iterator

from bench import loads, reads
from bench.report import Row, progress
from tests import topology_harness
from tests.pg_harness import wait_for

# A few reads that stand for the rest: a list on an index walk, a filtered list, one member.
READS = [
    ("list: sort=name", "/crew?sort=name&limit=100"),
    ("list: agency=NASA&sort=-updated_at", "/crew?agency=NASA&sort=-updated_at&limit=100"),
    ("member: GET /crew/{id}", f"/crew/{7:024x}"),
]


@contextlib.contextmanager
def topology() -> Iterator[topology_harness.Topology]:
    built = topology_harness.Topology()
    try:
        yield built
    finally:
        built.destroy()


def topology_rows(records: int, generator: str, seconds: int, baseline: float) -> list[Row]:
    reason = topology_harness.available()
    if reason is not None:
        return [progress(Row("topology: skipped", note=reason))]
    with topology() as built, loads.upstream(records) as same:
        with built.primary.cursor("postgres") as cursor:
            cursor.execute("CREATE DATABASE crew_etl_direct")
        direct_only = built.primary.url("crew_etl_direct")
        pooled, direct = built.bouncer.url(), built.primary.url()
        loads.migrate(direct_only)
        loads.migrate(pooled)
        rows = [
            loads.ingest("first, PG 15 direct", direct_only, same, baseline),
            loads.ingest("first, PG 15 through PgBouncer", pooled, same, baseline),
        ]
        wait_for(lambda: replica_caught_up(built), timeout=600)
        rows += reads_through(direct, generator, seconds, "direct")
        rows += reads_through(pooled, generator, seconds, "PgBouncer")
        replica = {"DATABASE_READ_URL": built.standby.url()}
        rows += reads_through(direct, generator, seconds, "replica", **replica)
    return rows


def replica_caught_up(built: topology_harness.Topology) -> bool:
    query = "SELECT count(*), max(updated_at) FROM crew"
    return built.standby.one(query) == built.primary.one(query)


def reads_through(url: str, generator: str, seconds: int, how: str, **env: str) -> list[Row]:
    with reads.service(url, generator, seconds, **env) as svc:
        return [reads.measure(svc, path, f"{label} ({how})") for label, path in READS]
