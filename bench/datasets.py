"""Reads on data sets that vary what a filter matches (tests/synthetic_sets.py): for each set, a
fresh database loaded by one `crew-etl ingest` (the real path, its upkeep included), then the
first request after the load, cold, and a representative subset of the list matrix under load:

- the name filter `name=ann` with every sort, both directions (the case whose cost moves with
  the share of matching names and where they sit in name order);
- the name filter paired with each other filter, default sort;
- each other filter alone with the default sort, and agency + status with `-updated_at`;
- no filter, default sort.

The full matrix of bench/reads.py (176 URLs) runs on the `current` set only: on every set it
would take over an hour on two cores. One table per set.
"""

import time

import httpx

from bench import loads, reads
from bench.report import Row, progress
from tests.fake_upstream import COMMON_LAUNCH
from tests.synthetic_sets import NEEDLE, SETS

SORTS = [f"{direction}{sort}" for sort in reads.SORTS for direction in ("", "-")]
OTHERS = ["agency=NASA", "status=retired", f"launch={COMMON_LAUNCH}"]
# The first request after a load, cold: the one the issue saw at 1.6 s.
FIRST = "/crew?agency=NASA&limit=100"


def paths() -> list[str]:
    name = f"name={NEEDLE}"
    return [
        *(f"/crew?{name}&sort={sort}&limit=100" for sort in SORTS),
        *(f"/crew?{name}&{other}&limit=100" for other in OTHERS),
        *(f"/crew?{other}&limit=100" for other in OTHERS),
        "/crew?agency=NASA&status=retired&sort=-updated_at&limit=100",
        "/crew?limit=100",
    ]


def one_set(dataset: str, url: str, records: int, svc_args: tuple[str, int]) -> list[Row]:
    """Load `dataset` into the fresh database `url`, then read it."""
    loads.migrate(url)
    with loads.upstream(records, dataset=dataset) as upstream_url:
        ingested = loads.ingest(f"{dataset}: first ingest", url, upstream_url, 1.0)
    ingested.ratio = None
    rows = [ingested]
    with reads.service(url, *svc_args, warm=False) as svc:
        started = time.perf_counter()
        first = httpx.get(svc.base + FIRST, timeout=120)
        first.raise_for_status()
        cold_ms = (time.perf_counter() - started) * 1000
        rows.append(progress(Row(f"first request after the load: {FIRST}", cold_ms)))
        for path in paths():
            matched = httpx.get(svc.base + path, timeout=60).json()
            row = reads.measure(svc, path, path.removeprefix("/crew?").removesuffix("&limit=100"))
            row.note = (
                f"total {matched['total']:,} ({'exact' if matched['total_exact'] else 'planned'})"
            )
            rows.append(row)
    return rows


def names() -> list[str]:
    return ["current", *SETS]
