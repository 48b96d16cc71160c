"""What the status page shows, read from one database snapshot: freshness, the recent runs, the
last run with its first rejects, and crew counts. No HTTP here: `app/api/status.py` serves it.

Every statement is served by an index (runs by primary key, rejects by (run_id, id)) except the
crew counts, which aggregate the whole table. Those change only when a run commits (its rows and
its `succeeded` status in one transaction), so they are computed once per successful run and
kept in memory until the next one (`CrewCountsCache`).
"""

from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

from app.models import CrewStatus, IngestRunPublic, RunStatus, RunTrigger
from app.problems import run_error_hint
from app.shapes import ALWAYS_SENT, RejectError
from app.status.deliveries import ScheduleSummary, WebhookHealth, read_schedule, read_webhooks

RECENT_RUNS = 50
FIRST_REJECTS = 10
ERRORS_PER_REJECT = 3
TOP_AGENCIES = 12
FINISHED = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)

# The newest runs, newest first (primary key index); every column, so new counts show up.
RECENT_RUNS_SQL = text("SELECT * FROM ingest_runs ORDER BY id DESC LIMIT :limit")

# The newest successful run that wrote the crew (a dry run writes nothing): when the data was
# last refreshed. Also the crew counts' cache key.
LAST_SUCCESS_SQL = text(
    "SELECT id, finished_at FROM ingest_runs WHERE status = 'succeeded' AND NOT dry_run"
    " ORDER BY id DESC LIMIT 1"
)

# A run's first rejects in id order, from ix_ingest_rejects_run_id_id: no raw record (it can be
# large), the first few errors and how many there are, the record id cut short.
FIRST_REJECTS_SQL = text(
    f"""
    SELECT id, left(record_id, 100) AS record_id,
           jsonb_array_length(errors) AS error_count,
           jsonb_path_query_array(errors, '$[0 to {ERRORS_PER_REJECT - 1}]') AS errors
    FROM ingest_rejects WHERE run_id = :run_id ORDER BY id LIMIT :limit
    """
)

# Crew counts in one scan: first per (agency, status, live) cell, which PostgreSQL can do in
# parallel, then the few cells rolled up per agency, per status and overall. Agencies group by
# the key `GET /crew?agency=` compares (lower case; no agency as ''); only the largest :top are
# returned, with how many agencies have live members at all.
CREW_COUNTS_SQL = text(
    """
    WITH cells AS (
        SELECT coalesce(lower(agency), '') AS agency_key, min(agency) AS agency, status,
               deleted_at IS NULL AS live, count(*) AS members
        FROM crew GROUP BY coalesce(lower(agency), ''), status, deleted_at IS NULL
    ), rollup AS (
        SELECT CASE WHEN GROUPING(agency_key) = 0 THEN 'agency'
                    WHEN GROUPING(status) = 0 THEN 'status' ELSE 'all' END AS kind,
               CASE WHEN GROUPING(agency_key) = 0 THEN min(agency) ELSE status END AS label,
               GROUPING(agency_key) = 0 AND agency_key = '' AS no_agency,
               coalesce(sum(members) FILTER (WHERE live), 0)::bigint AS live,
               coalesce(sum(members) FILTER (WHERE NOT live), 0)::bigint AS deleted
        FROM cells GROUP BY GROUPING SETS ((agency_key), (status), ())
    ), ranked AS (
        SELECT *, row_number() OVER (PARTITION BY kind ORDER BY live DESC, label) AS rank,
               count(*) FILTER (WHERE live > 0) OVER (PARTITION BY kind) AS groups
        FROM rollup
    )
    SELECT kind, label, no_agency, live, deleted, groups FROM ranked
    WHERE kind <> 'agency' OR (rank <= :top AND live > 0)
    ORDER BY kind, rank
    """
)


class FreshnessState(StrEnum):
    fresh = "fresh"
    stale = "stale"  # no run succeeded within the stale-after window
    last_failed = "last_failed"  # the newest finished run (dry runs aside) failed
    never_succeeded = "never_succeeded"


# Whether the data is current; the state is the most serious of what applies.
class Freshness(BaseModel):
    state: FreshnessState = Field(
        description="fresh, stale, last_failed or never_succeeded: the most serious that applies"
    )
    data_as_of: datetime | None = Field(description="When the newest successful run finished")
    last_success_run_id: int | None = Field(description="The id of that run")
    age_seconds: float | None = Field(description="Seconds since then")
    stale_after_seconds: float = Field(description="Age at which the data counts as stale")
    stale: bool = Field(description="Whether the data is older than that")
    hint: str | None = Field(
        description="What to do about the newest run's failure, as `crew-etl ingest` says it"
    )


# One run as the chart draws it.
class RunPoint(BaseModel):
    id: int = Field(description="Run id")
    status: RunStatus = Field(description="Run status")
    trigger: RunTrigger = Field(description="What started it")
    dry_run: bool = Field(description="Whether it only reported changes")
    started_at: datetime | None = Field(description="When it started")
    duration_seconds: float | None = Field(description="How long it took (so far, while running)")
    rows_changed: int = Field(description="Rows inserted, updated and deleted")


# A rejected record, shortened for the page: its id and its first errors.
class RejectSummary(BaseModel):
    id: int = Field(description="Reject id")
    record_id: str | None = Field(description="The id of the record, when it had one")
    error_count: int = Field(description="How many validation errors")
    errors: list[RejectError] = Field(description="The first validation errors")


# The newest run with its first rejects and where to read more.
class LastRun(BaseModel):
    model_config = ALWAYS_SENT

    run: IngestRunPublic = Field(description="The most recent run")
    duration_seconds: float | None = Field(description="How long it took")
    url: str = Field(description="The run in the API")
    rejects_url: str = Field(description="Its rejects in the API")
    rejects: list[RejectSummary] = Field(description="Its first rejects")
    changes_url: str | None = Field(
        default=None, description="Its change list, where the service has one"
    )


# A count and the `GET /crew` URL that lists exactly those members.
class CountLink(BaseModel):
    label: str | None = Field(description="Status or agency; null for members without an agency")
    count: int = Field(description="Members with it")
    url: str | None = Field(
        description="Those members in the API; null without an agency (GET /crew has no filter)"
    )


class CrewCounts(BaseModel):
    total: int = Field(description="Members the upstream still returns")
    total_url: str = Field(description="Them in the API")
    deleted: int = Field(description="Soft-deleted members: no longer returned upstream")
    deleted_url: str = Field(description="Them in the API")
    by_status: list[CountLink] = Field(description="Members per status")
    by_agency: list[CountLink] = Field(description="Members per agency, the largest first")
    other_agencies: int = Field(description="Agencies not listed in by_agency")
    other_agencies_members: int = Field(description="Their members")


# Everything the page shows that comes from the database, in one snapshot.
class Snapshot(BaseModel):
    generated_at: datetime = Field(description="When this summary was made")
    freshness: Freshness = Field(description="How current the data is")
    last_run: LastRun | None = Field(description="The last run; null before the first")
    recent_runs: list[RunPoint] = Field(description="Recent runs, newest first")
    crew: CrewCounts = Field(description="Crew counts")
    schedule: ScheduleSummary = Field(description="Whether scheduled runs are paused")
    webhooks: WebhookHealth = Field(description="The last webhook deliveries and how they went")


def crew_url(**filters: str) -> str:
    return "/crew" + (f"?{urlencode(filters)}" if filters else "")


def duration(run: IngestRunPublic, now: datetime) -> float | None:
    if run.started_at is None:
        return None
    return ((run.finished_at or now) - run.started_at).total_seconds()


def run_point(run: IngestRunPublic, now: datetime) -> RunPoint:
    return RunPoint(
        id=run.id,
        status=run.status,
        trigger=run.trigger,
        dry_run=run.dry_run,
        started_at=run.started_at,
        duration_seconds=duration(run, now),
        rows_changed=run.rows_inserted + run.rows_updated + run.rows_deleted,
    )


def run_counts(run: IngestRunPublic) -> dict[str, int]:
    """Every count a run records, in the model's order (new count columns appear by themselves)."""
    return {
        name: getattr(run, name)
        for name, field in IngestRunPublic.model_fields.items()
        if field.annotation is int and name != "id"
    }


def freshness(
    runs: list[IngestRunPublic], last_success: Any, now: datetime, stale_after: float
) -> Freshness:
    age = (now - last_success.finished_at).total_seconds() if last_success else None
    stale = age is None or age > stale_after
    finished = (run for run in runs if run.status in FINISHED and not run.dry_run)
    last_finished = next(finished, None)
    failed = last_finished is not None and last_finished.status == RunStatus.failed
    if last_success is None:
        state = FreshnessState.never_succeeded
    elif failed:
        state = FreshnessState.last_failed
    else:
        state = FreshnessState.stale if stale else FreshnessState.fresh
    return Freshness(
        state=state,
        data_as_of=last_success.finished_at if last_success else None,
        last_success_run_id=last_success.id if last_success else None,
        age_seconds=age,
        stale_after_seconds=stale_after,
        stale=stale,
        hint=run_error_hint(last_finished.error) if failed and last_finished else None,
    )


def last_run(connection: Connection, run: IngestRunPublic, now: datetime) -> LastRun:
    rows = connection.execute(FIRST_REJECTS_SQL, {"run_id": run.id, "limit": FIRST_REJECTS})
    return LastRun(
        run=run,
        duration_seconds=duration(run, now),
        url=f"/ingest/{run.id}",
        rejects_url=f"/ingest/{run.id}/rejects",
        rejects=[RejectSummary.model_validate(row._mapping) for row in rows],
    )


def read_crew_counts(connection: Connection) -> CrewCounts:
    rows = connection.execute(CREW_COUNTS_SQL, {"top": TOP_AGENCIES}).all()
    overall = next(row for row in rows if row.kind == "all")
    statuses = {row.label: row.live for row in rows if row.kind == "status"}
    agencies = [row for row in rows if row.kind == "agency"]
    by_agency = [
        CountLink(
            label=None if row.no_agency else row.label,
            count=row.live,
            url=None if row.no_agency else crew_url(agency=row.label),
        )
        for row in agencies
    ]
    listed = sum(row.live for row in agencies)
    return CrewCounts(
        total=overall.live,
        total_url=crew_url(),
        deleted=overall.deleted,
        deleted_url=crew_url(include_deleted="true"),
        by_status=[
            CountLink(label=status, count=statuses.get(status, 0), url=crew_url(status=status))
            for status in CrewStatus
        ],
        by_agency=by_agency,
        other_agencies=(agencies[0].groups - len(agencies)) if agencies else 0,
        other_agencies_members=overall.live - listed,
    )


class CrewCountsCache:
    """Crew counts keyed by the newest successful run (id, finished_at): exact until the next
    successful run commits. Without any successful run nothing is cached."""

    def __init__(self) -> None:
        self._entry: tuple[tuple[int, datetime], CrewCounts] | None = None

    def get(self, connection: Connection, last_success: Any) -> CrewCounts:
        key = (last_success.id, last_success.finished_at) if last_success else None
        entry = self._entry
        if key is not None and entry is not None and entry[0] == key:
            return entry[1]
        counts = read_crew_counts(connection)
        if key is not None:
            self._entry = (key, counts)
        return counts


crew_counts_cache = CrewCountsCache()


def read_snapshot(connection: Connection, stale_after: float, receivers: int = 0) -> Snapshot:
    """The page's data; call inside one REPEATABLE READ transaction so the parts agree."""
    now = connection.execute(text("SELECT now()")).scalar_one()
    rows = connection.execute(RECENT_RUNS_SQL, {"limit": RECENT_RUNS})
    runs = [IngestRunPublic.model_validate(row._mapping) for row in rows]
    last_success = connection.execute(LAST_SUCCESS_SQL).one_or_none()
    return Snapshot(
        generated_at=now,
        freshness=freshness(runs, last_success, now, stale_after),
        last_run=last_run(connection, runs[0], now) if runs else None,
        recent_runs=[run_point(run, now) for run in runs],
        crew=crew_counts_cache.get(connection, last_success),
        schedule=read_schedule(connection),
        webhooks=read_webhooks(connection, receivers),
    )
