"""Runs followed live: the events of every run a client of this process follows, read from the
database (triggers write them with each change of a run's record, migration 0014), so a run is
followed the same whichever replica executes it. No HTTP here.

One poller per process, and only while someone follows a run: every POLL_SECONDS it reads, in
one statement, the events each followed run gained since the last look, keeps them in memory
for as long as the run is followed, and wakes the streams waiting on it. A hundred streams cost
one query every half second and no thread: the query runs in a worker thread of its own.
"""

import asyncio
import bisect
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import structlog
from sqlalchemy.exc import SQLAlchemyError

from app.db import get_read_connection
from app.event_models import RunEventKind
from app.models import ACTIVE_RUN_STATUSES

log = structlog.get_logger("crew_etl.events")

POLL_SECONDS = 0.5

# For each followed run (id, number of the last event held here): its status and the events
# numbered after that one, in order. One snapshot: a run that reads as finished has its last
# event among them. A followed run that no longer exists returns no row.
NEW_EVENTS = """
SELECT r.id, r.status, e.seq, e.kind, e.data::text
FROM unnest(%(ids)s::int[], %(after)s::int[]) AS w(id, after)
JOIN ingest_runs r ON r.id = w.id
LEFT JOIN ingest_run_events e ON e.run_id = w.id AND e.seq > w.after
ORDER BY r.id, e.seq
"""
read_connection = contextmanager(get_read_connection)


@dataclass(frozen=True)
class RunEvent:
    seq: int
    kind: RunEventKind
    data: str  # a JSON object


@dataclass(eq=False)
class FollowedRun:
    """What this process knows of one followed run; `changed` is set, and replaced, whenever
    that grows."""

    run_id: int
    events: list[RunEvent] = field(default_factory=list)
    loaded: bool = False  # read once at least
    finished: bool = False  # no longer queued or running (or gone)
    followers: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def after(self, seq: int) -> list[RunEvent]:
        return self.events[bisect.bisect_right(self.events, seq, key=lambda e: e.seq) :]

    def done_after(self, seq: int) -> bool:
        """Whether a stream that has sent every event up to `seq` has nothing more to wait for."""
        return self.loaded and self.finished and seq >= self.last_seq

    def update(self, status: str | None, events: Iterable[RunEvent]) -> None:
        self.events.extend(event for event in events if event.seq > self.last_seq)
        self.finished = is_finished(status)
        self.loaded = True
        self.wake()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class StreamsExhausted(Exception):
    """EVENTS_MAX_STREAMS streams are open in this process."""


class EventHub:
    """The followed runs of this process, their streams and the one poller reading them."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.streams = 0
        self.runs: dict[int, FollowedRun] = {}
        self.poller: asyncio.Task[None] | None = None
        self.new_run = anyio.Event()
        self.polling = anyio.CapacityLimiter(1)
        self.closing = False  # the process is stopping: streams end, clients go elsewhere

    def close_streams(self) -> None:
        """End every stream (they reconnect, with Last-Event-ID, to a replica that stays):
        the server waits for open requests before it stops. Safe in a signal handler."""
        self.closing = True
        if self.poller is not None and not self.poller.done():
            for followed in list(self.runs.values()):
                self.poller.get_loop().call_soon_threadsafe(followed.wake)

    def follow(self, run_id: int) -> FollowedRun:
        """Open a stream on the run; StreamsExhausted when this process serves its maximum."""
        if self.streams >= self.max_streams or self.closing:
            raise StreamsExhausted(f"{self.streams} event streams open (EVENTS_MAX_STREAMS)")
        self.streams += 1
        followed = self.runs.get(run_id)
        if followed is None:
            followed = self.runs[run_id] = FollowedRun(run_id)
            self.new_run.set()
        followed.followers += 1
        self.start_poller()
        return followed

    def unfollow(self, followed: FollowedRun) -> None:
        self.streams -= 1
        followed.followers -= 1
        if followed.followers == 0 and self.runs.get(followed.run_id) is followed:
            del self.runs[followed.run_id]

    def start_poller(self) -> None:
        loop = asyncio.get_running_loop()
        if self.poller is None or self.poller.done() or self.poller.get_loop() is not loop:
            self.new_run = anyio.Event()  # bound to this loop
            self.poller = loop.create_task(self.poll())

    async def poll(self) -> None:
        while self.runs:
            self.new_run = anyio.Event()
            after = {run_id: followed.last_seq for run_id, followed in self.runs.items()}
            try:
                rows = await anyio.to_thread.run_sync(read_new_events, after, limiter=self.polling)
            except SQLAlchemyError as exc:  # the streams wait, with their keep-alives
                log.warning("could not read run events", error=type(exc).__name__)
            except Exception:  # never leave the streams waiting on a poller that died
                log.exception("could not read run events")
            else:
                self.apply(after, rows)
            with anyio.move_on_after(POLL_SECONDS):  # a run followed meanwhile is read at once
                await self.new_run.wait()

    def apply(self, after: dict[int, int], rows: list[Any]) -> None:
        found: dict[int, tuple[str, list[RunEvent]]] = {}
        for run_id, status, seq, kind, data in rows:
            _, events = found.setdefault(run_id, (status, []))
            if seq is not None:
                events.append(RunEvent(seq, RunEventKind(kind), data))
        for run_id in after:
            followed = self.runs.get(run_id)
            if followed is None:
                continue
            status, events = found.get(run_id, (None, []))
            if events or not followed.loaded or followed.finished != is_finished(status):
                followed.update(status, events)


def is_finished(status: str | None) -> bool:
    """Whether a run in `status` (None: gone) can change no more."""
    return status is None or status not in ACTIVE_RUN_STATUSES


def read_new_events(after: dict[int, int]) -> list[Any]:
    params = {"ids": list(after), "after": list(after.values())}
    with read_connection() as connection:
        return list(connection.exec_driver_sql(NEW_EVENTS, params).all())
