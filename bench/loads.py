"""Write-side measurements: the COPY baseline, `crew-etl ingest` runs, what each index costs."""

import contextlib
import importlib.util
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from sqlalchemy.engine import make_url

from bench.report import Row, progress
from tests.fake_upstream import free_port

PROJECT = Path(__file__).resolve().parent.parent
COLUMNS = "id, name, status, agency, image, wikipedia, launches"
# The baseline and the first ingest are each measured TRIES times and their medians compared:
# one try of either moved by a quarter between two runs on a quiet machine.
TRIES = 3
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], ready_url: str) -> Iterator[int]:
    child = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(ready_url)
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


@contextlib.contextmanager
def upstream(records: int, changed_every: int = 0, dataset: str = "current") -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "tests.fake_upstream", "--records", str(records)]
    command += ["--port", str(port), "--changed-every", str(changed_every)]
    command += ["--dataset", dataset]
    url = f"http://127.0.0.1:{port}"
    with process(command, dict(os.environ), f"{url}/v4/crew/query"):
        yield url


def connect(url: str) -> "psycopg2.extensions.connection":
    return psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False))


def service_env(url: str, upstream_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "SPACEX_API_URL": upstream_url,
        "INGEST_PAGE_SIZE": "1000",
        "INGEST_MAX_DELETE_FRACTION": "1",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }


def copy_row(record: dict[str, Any]) -> str:
    """One row in COPY text format."""
    fields = ("name", "status", "agency", "image", "wikipedia")
    values = ("\\N" if record[f] is None else record[f].translate(COPY_ESCAPES) for f in fields)
    launches = "{" + ",".join(record["launches"]) + "}"
    return "\t".join([record["id"], *values, launches]) + "\n"


def copy_into(connection: Any, table: str, rows: str) -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {table} ({COLUMNS}) FROM STDIN", io.StringIO(rows))
    connection.commit()
    return time.perf_counter() - started


BASELINE = "ingest: baseline, 1 GET + COPY (same indexes)"
BASELINE_PRIMARY_KEY = "ingest: baseline, 1 GET + COPY (primary key only)"


def physical_limit(url: str, upstream_url: str, primary_key_only: bool = False) -> tuple[Row, str]:
    """The fetch and COPY below, TRIES times, the median counting; also returns the rows in COPY
    format, for the index costs."""
    tries, rows = [], ""
    for _ in range(TRIES):
        seconds, rows = one_physical_limit(url, upstream_url, primary_key_only)
        tries.append(seconds)
    median = statistics.median(tries)
    case = BASELINE_PRIMARY_KEY if primary_key_only else BASELINE
    return progress(Row(case, seconds=median, note=median_note(tries))), rows


def one_physical_limit(
    url: str, upstream_url: str, primary_key_only: bool = False
) -> tuple[float, str]:
    """One GET of the whole array and one COPY into an empty table with crew's columns and
    indexes (or its primary key only): seconds, and the rows in COPY format."""
    connection = connect(url)
    like = "INCLUDING DEFAULTS INCLUDING GENERATED" if primary_key_only else "INCLUDING ALL"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS crew_baseline")
        cursor.execute(f"CREATE TABLE crew_baseline (LIKE crew {like})")
        if primary_key_only:
            cursor.execute("ALTER TABLE crew_baseline ADD PRIMARY KEY (id)")
    connection.commit()
    started = time.perf_counter()
    rows = "".join(map(copy_row, httpx.get(f"{upstream_url}/v4/crew", timeout=300).json()))
    copy_into(connection, "crew_baseline", rows)
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE crew_baseline")
    connection.commit()
    connection.close()
    return seconds, rows


def median_note(tries: list[float]) -> str:
    return f"median of {len(tries)}: " + ", ".join(f"{t:.2f}" for t in tries) + " s"


def crew_indexes(connection: Any) -> dict[str, str]:
    """Name -> CREATE INDEX statement of every index on crew but the primary key."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'crew' "
            "AND indexname <> 'crew_pkey' ORDER BY indexname"
        )
        return dict(cursor.fetchall())


def on_table(indexdef: str, table: str, options: str = "") -> str:
    """An index definition of crew, renamed and moved to `table`, with storage options."""
    statement = re.sub(r"INDEX (\S+) ON \S+", rf"INDEX \1_{table} ON {table}", indexdef, count=1)
    return f"{statement} WITH ({options})" if options else statement


def index_costs(url: str, rows: str) -> list[Row]:
    """COPY of the same rows into a table with only crew's primary key, then with each index
    alone, then with all of them, then all with every GIN index in fastupdate=off mode."""
    connection = connect(url)
    definitions = crew_indexes(connection)
    gin_off = [
        on_table(d, "crew_cost", "fastupdate = off" if " USING gin " in d else "")
        for d in definitions.values()
    ]
    variants = {"primary key only": []} | {
        f"+ {name}": [on_table(d, "crew_cost")] for name, d in definitions.items()
    }
    variants["all indexes"] = [on_table(d, "crew_cost") for d in definitions.values()]
    variants["all indexes, GIN fastupdate=off"] = gin_off
    result = []
    for label, statements in variants.items():
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS crew_cost")
            cursor.execute(
                "CREATE TABLE crew_cost (LIKE crew INCLUDING DEFAULTS INCLUDING GENERATED)"
            )
            cursor.execute("ALTER TABLE crew_cost ADD PRIMARY KEY (id)")
            for statement in statements:
                cursor.execute(statement)
        connection.commit()
        seconds = copy_into(connection, "crew_cost", rows)
        result.append(progress(Row(f"index cost: COPY, {label}", seconds=seconds)))
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE crew_cost")
    connection.commit()
    connection.close()
    return result


def table_writes(url: str) -> dict[str, tuple[int, int]]:
    """(table oid, tuples inserted, updated or deleted so far) per table name (but the runs' own
    records), once the statistics have settled."""
    connection = connect(url)
    connection.autocommit = True
    last: dict[str, tuple[int, int]] = {}
    with connection.cursor() as cursor:
        for _ in range(50):
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT relname, relid, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
                "WHERE relname NOT IN ('ingest_runs', 'alembic_version', 'crew_baseline', "
                "'crew_cost')"
            )
            now = {name: (oid, count) for name, oid, count in cursor.fetchall()}
            if now == last:
                break
            last = now
            time.sleep(0.3)
    connection.close()
    return last


# `crew-etl ingest` with app/ingest/rewrite.py's rebuild off: every run updates crew in place.
IN_PLACE = (
    "import sys; import app.ingest.rewrite as rewrite; rewrite.MIN_ACTIVE = float('inf'); "
    "from app.cli import main; sys.argv = ['crew-etl', *sys.argv[1:]]; main()"
)


def ingest(
    name: str,
    url: str,
    upstream_url: str,
    baseline: float,
    project: Path = PROJECT,
    in_place: bool = False,
) -> Row:
    """`crew-etl ingest` of the code in `project`, in a child process: wall time, rows written
    per table (pg_stat_user_tables), peak RSS sampled from /proc (VmHWM). `in_place`: with the
    rebuild of a crew that a run changes most of turned off.

    (rusage's ru_maxrss is no good here: Linux carries the parent's high-water mark into the
    child across fork and exec, and this process holds the whole baseline array.)
    """
    before = table_writes(url)
    program = ["-c", IN_PLACE] if in_place else ["-m", "app.cli"]
    command = [sys.executable, *program, "ingest", "--allow-mass-delete"]
    env = service_env(url, upstream_url)
    seconds, peak_kb = timed_child(command, project, env, f"{name}: crew-etl ingest")
    after = table_writes(url)
    writes = ", ".join(written(t, oid, n, before.get(t)) for t, (oid, n) in sorted(after.items()))
    note = f"rows written: {writes}; peak RSS {peak_kb / 1024:.0f} MB"
    return progress(Row(f"ingest: {name}", seconds=seconds, ratio=seconds / baseline, note=note))


def written(table: str, oid: int, count: int, before: tuple[int, int] | None) -> str:
    """Rows the run wrote into `table`; all of a table that replaced it (a first load's or a
    rebuilt crew)."""
    if before is None or before[0] == oid:
        return f"{table} {count - (before[1] if before else 0):,}"
    return f"{table} {count:,} (a new table)"


def first_ingest(
    url: str,
    upstream_url: str,
    baseline: float,
    spare_urls: list[str],
    primary_key_baseline: float | None = None,
) -> Row:
    """The first ingest into each spare database (empty, migrated here), then into `url`, which
    the later sections read: the median counts, with the rows written and peak RSS of the last."""
    tries = []
    for target in [*spare_urls, url]:
        migrate(target)
        tries.append(ingest("first (one try)", target, upstream_url, baseline))
    times = [t.seconds or 0 for t in tries]
    seconds = statistics.median(times)
    note = f"{median_note(times)}; {tries[-1].note}"
    if primary_key_baseline:
        note += f"; {seconds / primary_key_baseline:.2f}x the primary-key-only baseline"
    return progress(Row("ingest: first", seconds=seconds, ratio=seconds / baseline, note=note))


# The last commit before crew versions: its first ingest is the yardstick for the versioned one.
BEFORE_VERSIONS = "3a91d88"


def first_ingest_before_versions(url: str, upstream_url: str, baseline: float) -> list[Row]:
    """The first ingest of the code before crew versions (BEFORE_VERSIONS, exported from git)
    into `url`, a database of its own; no row without the git history."""
    with tempfile.TemporaryDirectory(prefix="crew-etl-before-versions-") as tree:
        archive = subprocess.run(
            ["git", "archive", BEFORE_VERSIONS], cwd=PROJECT, capture_output=True, check=False
        )
        if archive.returncode != 0:
            print("(no git history: first ingest before versions not measured)", file=sys.stderr)
            return []
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        migrate(url, Path(tree))
        name = f"first, code before versions ({BEFORE_VERSIONS}), own database"
        return [ingest(name, url, upstream_url, baseline, Path(tree))]


def migrate(url: str, project: Path = PROJECT) -> None:
    command = [sys.executable, "-m", "app.cli", "migrate"]
    env = service_env(url, "")
    subprocess.run(command, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)


def timed_child(command: list[str], cwd: Path, env: dict[str, str], what: str) -> tuple[float, int]:
    """Run `command` to its end: its wall time and its peak RSS in kB, sampled from /proc
    (VmHWM); raises naming `what` when it fails."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    peak_kb = 0
    while child.poll() is None:
        peak_kb = max(peak_kb, high_water_kb(child.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{what} exited {child.returncode}")
    return seconds, peak_kb


def high_water_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def dlt_first_load(url: str, upstream_url: str, baseline: float, ingest_seconds: float) -> Row:
    """dlt 1.31 loading the same data into the empty database `url` (bench/dlt_load.py), in a
    child process: wall time, peak RSS, and its time over the first ingest's."""
    if importlib.util.find_spec("dlt") is None:
        note = "skipped: dlt is not installed (the bench dependency group: uv sync --group bench)"
        return progress(Row("ingest: dlt 1.31, merge, paged REST source", note=note))
    target = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    command = [sys.executable, "-m", "bench.dlt_load", upstream_url, target]
    env = {**os.environ, "RUNTIME__LOG_LEVEL": "WARNING"}
    seconds, peak_kb = timed_child(command, PROJECT, env, "dlt load")
    note = (
        f"peak RSS {peak_kb / 1024:.0f} MB; {seconds / ingest_seconds:.2f}x the first ingest's time"
    )
    row = Row("ingest: dlt 1.31, merge, paged REST source", seconds=seconds, note=note)
    row.ratio = seconds / baseline
    return progress(row)
