"""Benchmark: N synthetic crew records through the real ingest path, against the physical limit,
and the read path under load, in one run on the same data. Prints one markdown table.

Sections, in order (between two measures of the machine's own speed, bench/machine.py):
1. ingest: the baseline (one `GET /v4/crew` of the whole array and one `COPY` into an empty table
   with crew's columns and indexes), the first `crew-etl ingest` (its own process: paged
   `POST /v4/crew/query`, page size 1000, validation, load, run record), each three times in
   empty databases, their medians compared; a re-ingest of the
   same data, and the first ingest of the code before crew versions (git commit
   BEFORE_VERSIONS) into a database of its own, the yardstick for the cost of versions;
2. index cost: the same `COPY` into a table with the primary key only, then with each of crew's
   indexes alone, then with all, then with all and GIN fastupdate off;
3. reads, one uvicorn worker, 16 connections, while every row has the same `updated_at` (one
   load): every list query (each filter alone and in pairs, each sort both ways,
   include_deleted both ways), the last page by offset and by cursor, a name filter whose
   matches come last in name order, one member by id; the
   status page `GET /`, HTML and JSON, one client after another;
4. ingest: a re-ingest with 1% of the records changed;
5. topology (bench/topology.py): the first ingest through PgBouncer against direct, and reads
   direct, through PgBouncer and from a streaming replica, on servers of its own.

It uses its own databases (`--database` or $BENCH_DB, default `crew_etl_bench`, and that name
with `_before_versions`) on the server of DATABASE_URL or on the embedded server. A section adds
rows to the one table (bench/report.py). Usage: `make bench` or `make bench N=20000`.
"""

import argparse
import contextlib
import datetime
import os
from collections.abc import Iterator

import psycopg2
from sqlalchemy.engine import make_url

from app.config import settings
from app.db import database_url
from bench import datasets, first_minute, loads, machine, reads, topology
from bench.report import Row, read_summary, render


def bench_database(name: str) -> str:
    """A database of our own on the configured (or embedded) server, created fresh."""
    with admin_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    return make_url(database_url()).set(database=name).render_as_string(hide_password=False)


def drop_databases(urls: list[str]) -> None:
    with admin_cursor() as cursor:
        for url in urls:
            cursor.execute(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')


@contextlib.contextmanager
def admin_cursor() -> Iterator["psycopg2.extensions.cursor"]:
    """A cursor in autocommit on the server's own database (CREATE and DROP DATABASE)."""
    server_url = make_url(database_url()).set(drivername="postgresql")
    admin = psycopg2.connect(server_url.render_as_string(False))
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            yield cursor
    finally:
        admin.close()


def database_label() -> str:
    url = make_url(database_url())
    return f"{url.host}:{url.port or 5432}" if url.host else "embedded server (unix socket)"


def run(args: argparse.Namespace) -> tuple[list[Row], str]:
    url = bench_database(args.database)
    loads.migrate(url)
    rows: list[Row] = machine.speed(url, "before")
    with loads.upstream(args.records) as same:
        baseline, copy_rows = loads.physical_limit(url, same)
        seconds = baseline.seconds or 1
        baseline.ratio = 1.0
        primary_key, _ = loads.physical_limit(url, same, primary_key_only=True)
        primary_key.ratio = (primary_key.seconds or 0) / seconds
        spares = [bench_database(f"{args.database}_first_{n}") for n in range(1, loads.TRIES)]
        try:
            first = loads.first_ingest(url, same, seconds, spares, primary_key.seconds)
            rows += [baseline, primary_key, first]
        finally:
            drop_databases(spares)
        dlt_url = bench_database(f"{args.database}_dlt")
        rows.append(loads.dlt_first_load(dlt_url, same, seconds, rows[-1].seconds or 1))
        drop_databases([dlt_url])
        rows.append(loads.ingest("re-ingest, unchanged", url, same, seconds))
        before = bench_database(f"{args.database}_before_versions")
        rows += loads.first_ingest_before_versions(before, same, seconds)
    if not args.skip_index_costs:
        rows += loads.index_costs(url, copy_rows)
    del copy_rows
    with reads.service(url, args.load_generator, args.read_seconds) as svc:
        rows += reads.list_reads(svc) + reads.deep_pages(svc, args.records)
        rows += reads.name_walks(svc)
        rows += reads.member_reads(svc)
        rows += reads.as_of_reads(svc, url)
        rows += reads.status_page(svc, url)
        generator = svc.generator
    with loads.upstream(args.records, changed_every=100) as changed:
        rows.append(loads.ingest("re-ingest, 1% changed", url, changed, seconds))
    rows += every_member_changed(args.records, url, seconds)
    if not args.skip_topology:
        rows += topology.topology_rows(
            args.records, args.load_generator, args.read_seconds, seconds
        )
    return rows + machine.speed(url, "after"), generator


def every_member_changed(records: int, url: str, seconds: float) -> list[Row]:
    """Runs that change (nearly) every member: rebuilt (app/ingest/rewrite.py), then the same
    change back in place and again rebuilt, so the last two compare like for like."""
    with loads.upstream(records) as same, loads.upstream(records, changed_every=1) as changed:
        return [
            loads.ingest("re-ingest, the other 99% changed, rebuilt", url, changed, seconds),
            loads.ingest(
                "re-ingest, every member changed, in place (rebuild off)",
                url,
                same,
                seconds,
                in_place=True,
            ),
            loads.ingest("re-ingest, every member changed, rebuilt", url, changed, seconds),
        ]


def versions_summary(rows: list[Row]) -> str:
    """The first ingest with versions against the first ingest of the code before them."""
    first = next(r for r in rows if r.case == "ingest: first")
    before = [r for r in rows if "code before versions" in r.case]
    if not before or not first.seconds or not before[0].seconds:
        return ""
    return (
        f"First ingest with versions {first.seconds:.2f} s, before versions "
        f"({loads.BEFORE_VERSIONS}) {before[0].seconds:.2f} s: "
        f"{first.seconds / before[0].seconds:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--read-seconds", type=int, default=2, help="load per URL")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--database",
        default=os.environ.get("BENCH_DB", "crew_etl_bench"),
        help="created afresh on the server (also NAME_before_versions); default $BENCH_DB",
    )
    parser.add_argument("--skip-index-costs", action="store_true")
    parser.add_argument(
        "--skip-topology", action="store_true", help="no PgBouncer and replica rows"
    )
    parser.add_argument(
        "--datasets",
        default=",".join(datasets.names()),
        help="comma-separated data sets read after the main table (bench/datasets.py); '' none",
    )
    parser.add_argument("--datasets-only", action="store_true", help="skip the main table")
    parser.add_argument(
        "--skip-first-minute", action="store_true", help="skip bench/first_minute.py's rows"
    )
    args = parser.parse_args()
    print(machine_line(args))
    if not args.datasets_only:
        rows, _ = run(args)
        print(render(rows))
        print()
        print(read_summary(rows, "list:"))
        print(versions_summary(rows))
    if not args.skip_first_minute:
        url = bench_database(f"{args.database}_first_minute")
        svc_args = (args.load_generator, args.read_seconds)
        print("\n### The first minute after a run\n")
        print(render(first_minute.first_minute(url, args.records, svc_args)))
        drop_databases([url])
    for name in filter(None, args.datasets.split(",")):
        url = bench_database(f"{args.database}_set")
        rows = datasets.one_set(name, url, args.records, (args.load_generator, args.read_seconds))
        print(f"\n### Data set `{name}`\n")
        print(render(rows))
        print(read_summary(rows, ""))
        drop_databases([url])


def machine_line(args: argparse.Namespace) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    return (
        f"N = {args.records:,} records, {os.cpu_count()} cores, load average {load}, database "
        f"{database_label()}, {today}; reads: 1 uvicorn worker, {reads.CLIENTS} connections, "
        f"{args.read_seconds:g} s per URL\n"
    )


if __name__ == "__main__":
    settings.LOG_LEVEL = "WARNING"
    main()
