"""Reads in the first minute after a run: one uvicorn worker under 16 connections throughout a
first ingest of N members into an empty database, then for 60 s after it commits; the same
around a re-ingest with 1 % of the records changed, and one that changes all the others (a run
that rebuilds crew, app/ingest/rewrite.py).

wrk runs in windows of WINDOW seconds, cycling through URLS; a row reports the worst window's
p50 and p99 (an upper bound of the period's p99) and the lowest window's req/s, so a slow
first query after the commit (cold cache, statistics, the status page's recount) shows.
"""

import threading

from bench import loads, reads
from bench.report import Row, progress

WINDOW = 5
AFTER_SECONDS = 60
URLS = [
    "/crew?agency=NASA&limit=100",
    "/crew?name=ann&limit=100",
    "/crew?status=retired&sort=-updated_at&limit=100",
]


def windows(svc: reads.Service, count: int | None, until: threading.Event) -> list[reads.Measured]:
    """`count` windows of load, or windows until `until` is set."""
    measured: list[reads.Measured] = []
    while (count is None and not until.is_set()) or (count is not None and len(measured) < count):
        url = svc.base + URLS[len(measured) % len(URLS)]
        measured.append((reads.wrk if svc.generator == "wrk" else reads.httpx_load)(url, WINDOW))
    return measured


def summary(label: str, measured: list[reads.Measured], note: str) -> Row:
    p50s = [m[0] for m in measured if m[0] is not None]
    p99s = [m[1] for m in measured if m[1] is not None]
    errors = sum(m[3] for m in measured)
    note = f"{len(measured)} windows of {WINDOW} s; {note}"
    row = Row(label, max(p50s, default=None), max(p99s, default=None), None, errors, note=note)
    row.rps = min(m[2] for m in measured) if measured else None
    return progress(row)


def around(svc: reads.Service, label: str, url: str, upstream_url: str) -> list[Row]:
    """Reads throughout the ingest of `upstream_url` into `url`, then for AFTER_SECONDS."""
    done, result = threading.Event(), []

    def ingest() -> None:
        try:
            result.append(loads.ingest(label, url, upstream_url, 1.0))
        finally:
            done.set()

    worker = threading.Thread(target=ingest)
    worker.start()
    during = windows(svc, None, done)
    worker.join()
    after = windows(svc, AFTER_SECONDS // WINDOW, threading.Event())
    ingested = result[0]
    ingested.ratio = None
    return [
        ingested,
        summary(f"first minute: reads during {label}", during, "worst window"),
        summary(
            f"first minute: reads in the {AFTER_SECONDS} s after {label}", after, "worst window"
        ),
    ]


def first_minute(url: str, records: int, svc_args: tuple[str, int]) -> list[Row]:
    """A first ingest into the empty, migrated database `url`, a 1 % change, then the rest."""
    loads.migrate(url)
    rows: list[Row] = []
    with reads.service(url, *svc_args) as svc:
        with loads.upstream(records) as same:
            rows += around(svc, "first ingest", url, same)
        with loads.upstream(records, changed_every=100) as changed:
            rows += around(svc, "re-ingest, 1% changed", url, changed)
        with loads.upstream(records, changed_every=1) as rest:
            rows += around(svc, "re-ingest, the other 99% changed (rebuilt)", url, rest)
    return rows
