"""Set-based load into `crew` and `crew_versions` in the caller's transaction: upsert per page,
soft delete; each statement writes a member's row and its version together. No HTTP."""

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from app.ingest import bulk
from app.ingest.storable import storable_json, storable_text
from app.models import CREW_FIELDS

COLUMNS = ", ".join(CREW_FIELDS)
CHANGED = ", ".join(f"c.{name}" for name in CREW_FIELDS if name != "id")
INCOMING = ", ".join(f"excluded.{name}" for name in CREW_FIELDS if name != "id")
ASSIGN = ", ".join(f"{name} = excluded.{name}" for name in CREW_FIELDS if name != "id")
FIELDS = ", ".join(name for name in CREW_FIELDS if name != "id")
ROW_FIELDS = ", ".join(f"r.{name}" for name in CREW_FIELDS if name != "id")
OLD = ", ".join(f"o.{name}" for name in CREW_FIELDS if name != "id")
NEW = ", ".join(f"p.{name}" for name in CREW_FIELDS if name != "id")

# The version a changed row opens (its fields as written, valid from the run's `now()`, like
# its `updated_at`), after closing the version that was open. `changed_rows` is a CTE of crew
# rows as written (RETURNING), `closed` the versions this statement closed.
VERSION_INSERT = f"""
    INSERT INTO crew_versions (
        crew_id, valid_from, opened_run_id, op, {FIELDS}, created_at, deleted_at
    )
    SELECT r.id, r.updated_at, %(run_id)s, {{op}}, {ROW_FIELDS}, r.created_at, r.deleted_at
    FROM changed_rows r LEFT JOIN closed ON closed.crew_id = r.id
"""
VERSION_CLOSE = """
    UPDATE crew_versions v SET valid_to = now(), closed_run_id = %(run_id)s
    FROM changed_rows r
    WHERE v.crew_id = r.id AND v.valid_to IS NULL {only}
    RETURNING v.crew_id, v.deleted_at
"""

# The load transaction holds this advisory lock, (RUN_LOCK_CLASS, run id), for as long as it
# lives: it names the backend running the run's transaction, and only while it runs it (see
# runs.END_LOAD_CONNECTIONS), which a session's application_name cannot do behind a
# transaction-mode pooler, where the server connection serves other clients afterwards.
RUN_LOCK_CLASS = 0x63726577  # "crew"
# crew_seen: ids of the run's valid records. crew_kept: ids of its records that failed
# validation, whose rows keep their last good state instead of being soft-deleted. The run
# widens the name bounds itself, once (WIDEN_NAME_BOUNDS), not the trigger page by page.
# Settings are the transaction's (SET LOCAL, set_config(..., true)): nothing outlives it.
SETUP = f"""
SELECT pg_advisory_xact_lock({RUN_LOCK_CLASS}, %(run_id)s);
SET LOCAL TimeZone = 'UTC';
CREATE TEMP TABLE crew_seen (id varchar(24) PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE crew_kept (id varchar(24) PRIMARY KEY) ON COMMIT DROP;
SELECT set_config('crew_etl.name_bounds', 'by_run', true)
"""
# Where name-sorted walks start (migration 0012) must cover every name the run wrote: all its
# rows carry the run's now() as updated_at, inserted, updated or soft-deleted.
WIDEN_NAME_BOUNDS = "SELECT crew_name_trigrams_widen_for_run()"

# Where a page's rows go: crew, or a first load's stage table (app/ingest/bulk.py); which table
# holds the ids the run saw: crew_seen, or that stage.
TARGET = "__target__"
SEEN = "__seen__"

# One statement per page: parse the page's JSON in the server, remember its ids, skip ids an
# earlier page had, then upsert and write only rows whose content differs (or that come back
# from soft deletion), and version exactly those rows. xmax = 0 tells an inserted row from an
# updated one; an updated row whose closed version was deleted is a restore.
UPSERT_PAGE = f"""
WITH page AS (
    SELECT {COLUMNS} FROM jsonb_populate_recordset(NULL::crew, %(page)s::jsonb)
), fresh AS (
    INSERT INTO crew_seen SELECT id FROM page ON CONFLICT DO NOTHING RETURNING id
), changed_rows AS (
    INSERT INTO {TARGET} AS c ({COLUMNS})
    SELECT {COLUMNS} FROM page JOIN fresh USING (id)
    ON CONFLICT (id) DO UPDATE SET {ASSIGN}, updated_at = now(), deleted_at = NULL
    WHERE ({CHANGED}, c.deleted_at) IS DISTINCT FROM ({INCOMING}, NULL)
    RETURNING c.*, xmax = 0 AS inserted
), closed AS ({VERSION_CLOSE.format(only="AND NOT r.inserted")}
), opened AS ({
    VERSION_INSERT.format(
        op="CASE WHEN r.inserted THEN 'insert' WHEN closed.deleted_at IS NOT NULL "
        "THEN 'restore' ELSE 'update' END"
    )
})
SELECT
    (SELECT coalesce(array_agg(id), '{{}}') FROM page WHERE id NOT IN (SELECT id FROM fresh)),
    count(*) FILTER (WHERE inserted),
    count(*) FILTER (WHERE NOT inserted)
FROM changed_rows
"""

# A first load's page (app/ingest/bulk.py): the stage starts empty and only this run writes it,
# so every record is new but one whose id an earlier page had, and the stage itself is the set
# of ids seen (crew_seen stays empty).
BULK_PAGE = f"""
WITH page AS (
    SELECT {COLUMNS} FROM jsonb_populate_recordset(NULL::crew, %(page)s::jsonb)
), changed_rows AS (
    INSERT INTO {TARGET} AS c ({COLUMNS}) SELECT {COLUMNS} FROM page
    ON CONFLICT (id) DO NOTHING
    RETURNING c.*
), opened AS (
    INSERT INTO crew_versions (
        crew_id, valid_from, opened_run_id, op, {FIELDS}, created_at, deleted_at
    )
    SELECT r.id, r.updated_at, %(run_id)s, 'insert', {ROW_FIELDS}, r.created_at, r.deleted_at
    FROM changed_rows r
)
SELECT
    (SELECT coalesce(array_agg(id), '{{}}') FROM page
     WHERE id NOT IN (SELECT id FROM changed_rows)),
    count(*),
    0
FROM changed_rows
"""

# A page of a run that rebuilds crew (app/ingest/rewrite.py): crew keeps its rows as they were;
# the stage takes the members that are new or changed, versioned as UPSERT_PAGE versions them.
INSERTED = "r.id IN (SELECT id FROM changes WHERE inserted)"
REWRITE_PAGE = f"""
WITH page AS (
    SELECT {COLUMNS} FROM jsonb_populate_recordset(NULL::crew, %(page)s::jsonb)
), fresh AS (
    INSERT INTO crew_seen SELECT id FROM page ON CONFLICT DO NOTHING RETURNING id
), changes AS MATERIALIZED (
    SELECT p.*, o.id IS NULL AS inserted, o.created_at AS first_loaded
    FROM page p JOIN fresh USING (id) LEFT JOIN crew o USING (id)
    WHERE o.id IS NULL OR ({OLD}, o.deleted_at) IS DISTINCT FROM ({NEW}, NULL)
), changed_rows AS (
    INSERT INTO {TARGET} AS c ({COLUMNS}, created_at)
    SELECT {COLUMNS}, coalesce(first_loaded, now()) FROM changes
    RETURNING c.*
), closed AS ({VERSION_CLOSE.format(only=f"AND NOT {INSERTED}")}
), opened AS ({
    VERSION_INSERT.format(
        op=f"CASE WHEN {INSERTED} THEN 'insert' WHEN closed.deleted_at IS NOT NULL "
        "THEN 'restore' ELSE 'update' END"
    )
})
SELECT
    (SELECT coalesce(array_agg(id), '{{}}') FROM page WHERE id NOT IN (SELECT id FROM fresh)),
    count(*) FILTER (WHERE inserted),
    count(*) FILTER (WHERE NOT inserted)
FROM changes
"""

KEEP = "INSERT INTO crew_kept SELECT unnest(%s::varchar[]) ON CONFLICT DO NOTHING"

# Active rows the run saw no valid record for: kept (a rejected record named them) or vanished.
COUNT_UNSEEN = f"""
SELECT
    count(*) FILTER (WHERE EXISTS (SELECT 1 FROM crew_kept k WHERE k.id = crew.id)),
    count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM crew_kept k WHERE k.id = crew.id))
FROM crew
WHERE deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM {SEEN} s WHERE s.id = crew.id)
"""

# Soft-delete crew this run did not see (valid or rejected), closing their versions and opening
# deleted ones.
SOFT_DELETE = f"""
WITH changed_rows AS (
    UPDATE crew SET deleted_at = now(), updated_at = now()
    WHERE deleted_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM {SEEN} s WHERE s.id = crew.id)
        AND NOT EXISTS (SELECT 1 FROM crew_kept k WHERE k.id = crew.id)
    RETURNING crew.*
), closed AS ({VERSION_CLOSE.format(only="")}
), opened AS ({VERSION_INSERT.format(op="'delete'")})
SELECT count(*) FROM changed_rows
"""

# The same for a run that rebuilds crew: the rows go into the stage, deleted.
REWRITE_SOFT_DELETE = f"""
WITH changed_rows AS (
    INSERT INTO {TARGET} AS c ({COLUMNS}, created_at, updated_at, deleted_at)
    SELECT {COLUMNS}, created_at, now(), now() FROM crew
    WHERE deleted_at IS NULL
        AND NOT EXISTS (SELECT 1 FROM crew_seen s WHERE s.id = crew.id)
        AND NOT EXISTS (SELECT 1 FROM crew_kept k WHERE k.id = crew.id)
    RETURNING c.*
), closed AS ({VERSION_CLOSE.format(only="")}
), opened AS ({VERSION_INSERT.format(op="'delete'")})
SELECT count(*) FROM changed_rows
"""

# Merge what the run left in the GIN indexes' pending lists (fastupdate) into the indexes proper:
# every search of a GIN index reads its whole pending list (up to gin_pending_list_limit, 4 MB),
# which after a load cost a rare-launch read 12 ms instead of 2. Cheaper here once than per read.
CLEAN_GIN_PENDING_LISTS = """
SELECT coalesce(sum(gin_clean_pending_list(i.indexrelid)), 0)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
WHERE i.indrelid = 'crew'::regclass AND a.amname = 'gin'
"""

INSERT_REJECTS = """
INSERT INTO ingest_rejects (run_id, record_id, errors, raw)
SELECT %s, r.record_id, r.errors, coalesce(r.raw, 'null'::jsonb)
FROM jsonb_to_recordset(%s::jsonb) AS r(record_id text, errors jsonb, raw jsonb)
"""

RAW_MAX_CHARS = 8192  # of a reject's record as JSON text; longer ones are kept cut, as a string
RECORD_ID_MAX_CHARS = 100
JSON_MAX_CHARS = 1_000_000  # run bookkeeping (schema drift, errors): never cut in practice


class MassDeleteRefused(Exception):
    pass


class TooManyRejects(Exception):
    pass


@dataclass(frozen=True)
class PageResult:
    inserted: int
    updated: int
    unchanged: int
    repeated_ids: list[str]


def begin(cursor: Any, run_id: int) -> tuple[int, bulk.Stage | None]:
    """Open the run's transaction (its lock, settings and staging tables); return the number of
    active crew before the run, and the stage table its pages go to if it is a first load."""
    cursor.execute(SETUP, {"run_id": run_id})
    cursor.execute("SELECT count(*) FROM crew WHERE deleted_at IS NULL")
    active = int(cursor.fetchone()[0])
    return active, bulk.stage(cursor, run_id) if active == 0 else None


@functools.cache
def on_tables(sql: str, target: str, seen: str) -> str:
    return sql.replace(TARGET, target).replace(SEEN, seen)


def load_page(
    cursor: Any, run_id: int, page_json: str, valid: int, stage: bulk.Stage | None = None
) -> PageResult:
    """Upsert one page of validated records, given as a JSON array of `valid` crew objects,
    into crew, the first load's stage or a rebuild's."""
    if stage is None:
        sql = on_tables(UPSERT_PAGE, "crew", "crew_seen")
    elif stage.replaces_rows:
        sql = on_tables(REWRITE_PAGE, stage.table, "crew_seen")
    else:
        sql = on_tables(BULK_PAGE, stage.table, stage.table)
    cursor.execute(sql, {"page": page_json, "run_id": run_id})
    repeated, inserted, updated = cursor.fetchone()
    unchanged = valid - len(repeated) - inserted - updated
    return PageResult(inserted, updated, unchanged, list(repeated))


def keep_rows(cursor: Any, record_ids: list[str]) -> None:
    """Protect the rows of these ids (records that failed validation) from soft deletion."""
    if record_ids:
        cursor.execute(KEEP, (record_ids,))


def more_than(part: int, whole: int, fraction: float) -> bool:
    """part > fraction × whole, exactly: 0.29 is 29/100 here, not a binary float."""
    ratio = Fraction(str(fraction))
    return part * ratio.denominator > ratio.numerator * whole


def refuse_many_rejects(rejected: int, fetched: int, max_fraction: float) -> None:
    if more_than(rejected, fetched, max_fraction):
        raise TooManyRejects(
            f"refusing to load: {rejected} of {fetched} records rejected "
            f"(more than INGEST_MAX_REJECT_FRACTION={max_fraction}); "
            "the upstream may have changed shape"
        )


def soft_delete_vanished(
    cursor: Any,
    run_id: int,
    active_before: int,
    max_fraction: float,
    allow_mass_delete: bool,
    stage: bulk.Stage | None = None,
) -> tuple[int, int]:
    """Soft-delete crew the upstream no longer returns, refusing a mass deletion unless allowed.

    Returns (rows kept, rows deleted); kept rows are those only a rejected record named.
    """
    seen = stage.table if stage and not stage.replaces_rows else "crew_seen"
    cursor.execute(on_tables(COUNT_UNSEEN, "crew", seen))
    kept, vanished = (int(n) for n in cursor.fetchone())
    if vanished and not allow_mass_delete and more_than(vanished, active_before, max_fraction):
        raise MassDeleteRefused(
            f"refusing to soft-delete {vanished} of {active_before} active crew "
            f"(more than INGEST_MAX_DELETE_FRACTION={max_fraction}); "
            "trigger the run with allow_mass_delete=true to accept"
        )
    if stage is not None and stage.replaces_rows:
        cursor.execute(on_tables(REWRITE_SOFT_DELETE, stage.table, seen), {"run_id": run_id})
    else:
        cursor.execute(on_tables(SOFT_DELETE, "crew", seen), {"run_id": run_id})
    return kept, int(cursor.fetchone()[0])


def widen_name_bounds(cursor: Any) -> None:
    cursor.execute(WIDEN_NAME_BOUNDS)


def clean_gin_pending_lists(cursor: Any) -> int:
    """Empty the pending lists of crew's GIN indexes; return how many pages they held."""
    cursor.execute(CLEAN_GIN_PENDING_LISTS)
    return int(cursor.fetchone()[0])


def save_rejects(cursor: Any, run_id: int, rejects: Sequence[Any]) -> None:
    """Store rejects as storable JSON: see app/ingest/storable.py for what becomes text."""
    if rejects:
        cursor.execute(INSERT_REJECTS, (run_id, "[" + ",".join(map(reject_json, rejects)) + "]"))


def reject_json(reject: Any) -> str:
    record_id = reject.record_id and storable_text(reject.record_id, RECORD_ID_MAX_CHARS)
    return (
        f'{{"record_id": {json.dumps(record_id)}, '
        f'"errors": {storable_json(reject.errors, JSON_MAX_CHARS)}, '
        f'"raw": {storable_json(reject.raw, RAW_MAX_CHARS)}}}'
    )


def jsonb_text(value: Any) -> str:
    """JSON text for a jsonb parameter, whatever `value` holds (see app/ingest/storable.py)."""
    return storable_json(value, JSON_MAX_CHARS)
