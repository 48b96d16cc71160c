"""The benchmark's one table: every section adds rows; a row fills the columns it measures."""

import sys
from dataclasses import dataclass


@dataclass
class Row:
    case: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    errors: int | None = None
    seconds: float | None = None
    ratio: float | None = None  # wall time over the COPY baseline of the same run
    note: str = ""


def progress(row: Row) -> Row:
    """Say on stderr what was just measured (a whole run takes minutes); return the row."""
    print(render([row]).splitlines()[-1], file=sys.stderr, flush=True)
    return row


COLUMNS = ["case", "p50 ms", "p99 ms", "req/s", "errors", "wall s", "x COPY", "notes"]


def cell(value: float | int | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * 6 + " --- |"]
    for row in rows:
        cells = [
            row.case,
            cell(row.p50_ms, ".1f"),
            cell(row.p99_ms, ".1f"),
            cell(row.rps, ",.0f"),
            cell(row.errors, "d"),
            cell(row.seconds, ".2f"),
            cell(row.ratio, ".2f"),
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The goal each list query is held to (issue: reads at scale).
GOAL_P99_MS = 100
GOAL_RPS = 300


def read_summary(rows: list[Row], prefix: str) -> str:
    """How many rows whose case starts with `prefix` meet the goal, the worst p99 and the
    lowest throughput among them."""
    reads = [r for r in rows if r.case.startswith(prefix) and r.p99_ms is not None]
    if not reads:
        return ""
    slowest = max(reads, key=lambda r: r.p99_ms or 0)
    busiest = min(reads, key=lambda r: r.rps or 0)
    errors = sum(r.errors or 0 for r in reads)
    meeting = sum(1 for r in reads if (r.p99_ms or 0) < GOAL_P99_MS and (r.rps or 0) >= GOAL_RPS)
    return (
        f"{len(reads)} `{prefix}` rows: {meeting} meet p99 < {GOAL_P99_MS} ms and >= "
        f"{GOAL_RPS} req/s; worst p99 {slowest.p99_ms:.1f} ms ({slowest.case}), "
        f"lowest {busiest.rps:,.0f} req/s ({busiest.case}), {errors} errors"
    )
