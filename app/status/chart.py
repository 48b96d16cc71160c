"""Geometry of the recent-runs chart, drawn as inline SVG by the page template. Pure: no I/O.

Two panels share the x axis, one slot per run, oldest on the left: duration on top, rows
changed below, and a strip under both with one mark per run in its status colour, so a run with
nothing to draw (queued, or failed at once) still shows.

Horizontal positions are percentages of the plot's width and vertical ones are pixels, so the
SVG fills any width while its text keeps its size (a viewBox would shrink the labels on a
phone). The tick labels are drawn beside the plot, in a gutter of fixed width.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from app.status.summary import RunPoint

PANEL_HEIGHT = 90
PANEL_TOPS = (32, 166)  # each panel's title sits 12 px above its top
STRIP_TOP = 266
STRIP_HEIGHT = 10
HEIGHT = 300
MIN_SLOTS = 12  # a few runs still get narrow bars, not page-wide ones
BAR_FILL = 0.7  # share of a slot the bar covers


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Panel:
    title: str
    top: float
    ticks: list[Tick]


@dataclass(frozen=True)
class Bar:
    y: float
    height: float


@dataclass(frozen=True)
class Mark:
    run: RunPoint
    x: float  # percent
    width: float  # percent
    duration: Bar
    rows: Bar
    label: str  # what a tooltip and a screen reader say about the run


@dataclass(frozen=True)
class XLabel:
    x: float  # percent
    label: str
    anchor: str


@dataclass(frozen=True)
class Chart:
    height: int
    panels: list[Panel]
    marks: list[Mark]
    x_labels: list[XLabel]
    strip_top: int
    strip_height: int


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (1 for nothing to draw)."""
    if value <= 0:
        return 1
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if value <= step * power * (1 + 1e-9))


def format_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def format_count(count: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.3g}"


def bar(value: float, scale_max: float, top: float) -> Bar:
    """A bar standing on the panel's baseline; anything above zero gets at least 1 unit."""
    height = PANEL_HEIGHT * value / scale_max if value > 0 else 0
    height = max(height, 1) if value > 0 else 0
    return Bar(y=top + PANEL_HEIGHT - height, height=height)


def run_label(run: RunPoint) -> str:
    took = format_seconds(run.duration_seconds) if run.duration_seconds is not None else "no time"
    dry = " (dry run: nothing written)" if run.dry_run else ""
    return f"Run {run.id}{dry}: {run.status}, {took}, {run.rows_changed:,} rows changed"


def panel(title: str, top: float, scale_max: float, fmt: Callable[[float], str]) -> Panel:
    """Gridlines and labels at zero, half and the top of the scale."""
    ticks = [
        Tick(y=top + PANEL_HEIGHT * (1 - share), label=fmt(scale_max * share))
        for share in (0, 0.5, 1)
    ]
    return Panel(title=title, top=top, ticks=ticks)


def run_chart(runs: list[RunPoint]) -> Chart:
    """The chart of `runs` (newest first, as the summary lists them), newest at the right edge."""
    oldest_first = list(reversed(runs))
    slot = 100 / max(len(oldest_first), MIN_SLOTS)
    start = 100 - slot * len(oldest_first)
    seconds_max = nice_ceiling(max((r.duration_seconds or 0 for r in oldest_first), default=0))
    rows_max = nice_ceiling(max((r.rows_changed for r in oldest_first), default=0))
    duration_top, rows_top = PANEL_TOPS
    marks = [
        Mark(
            run=run,
            x=start + index * slot + slot * (1 - BAR_FILL) / 2,
            width=slot * BAR_FILL,
            duration=bar(run.duration_seconds or 0, seconds_max, duration_top),
            rows=bar(run.rows_changed, rows_max, rows_top),
            label=run_label(run),
        )
        for index, run in enumerate(oldest_first)
    ]
    first, last = oldest_first[0].id if runs else 0, runs[0].id if runs else 0
    if len(marks) > MIN_SLOTS // 2:  # far enough apart for a label at each end
        x_labels = [XLabel(marks[0].x, f"run {first}", "start"), XLabel(100, f"run {last}", "end")]
    else:
        x_labels = [XLabel(100, f"run {first}" if first == last else f"runs {first}-{last}", "end")]
    return Chart(
        height=HEIGHT,
        panels=[
            panel("Duration", duration_top, seconds_max, format_seconds),
            panel("Rows changed", rows_top, rows_max, format_count),
        ],
        marks=marks,
        x_labels=x_labels,
        strip_top=STRIP_TOP,
        strip_height=STRIP_HEIGHT,
    )
