"""Set-based load into `crew` in the caller's transaction: COPY, upsert, soft delete; no HTTP."""

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.models import CREW_FIELDS, CrewBase

COLUMNS = ", ".join(CREW_FIELDS)
CHANGED = ", ".join(f"c.{name}" for name in CREW_FIELDS if name != "id")
INCOMING = ", ".join(f"excluded.{name}" for name in CREW_FIELDS if name != "id")
ASSIGN = ", ".join(f"{name} = excluded.{name}" for name in CREW_FIELDS if name != "id")

SETUP = f"""
CREATE TEMP TABLE crew_page ON COMMIT DROP AS SELECT {COLUMNS} FROM crew WITH NO DATA;
CREATE TEMP TABLE crew_seen (id varchar(24) PRIMARY KEY) ON COMMIT DROP;
"""

# One statement per page: remember the ids, skip ids an earlier page had, then upsert and write
# only rows whose content differs (or that come back from soft deletion). xmax = 0 marks inserts.
UPSERT_PAGE = f"""
WITH fresh AS (
    INSERT INTO crew_seen SELECT id FROM crew_page ON CONFLICT DO NOTHING RETURNING id
), written AS (
    INSERT INTO crew AS c ({COLUMNS})
    SELECT {COLUMNS} FROM crew_page JOIN fresh USING (id)
    ON CONFLICT (id) DO UPDATE SET {ASSIGN}, updated_at = now(), deleted_at = NULL
    WHERE ({CHANGED}, c.deleted_at) IS DISTINCT FROM ({INCOMING}, NULL)
    RETURNING xmax = 0 AS inserted
)
SELECT
    (SELECT coalesce(array_agg(id), '{{}}') FROM crew_page WHERE id NOT IN (SELECT id FROM fresh)),
    count(*) FILTER (WHERE inserted),
    count(*) FILTER (WHERE NOT inserted)
FROM written
"""

COUNT_VANISHED = """
SELECT count(*) FROM crew
WHERE deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM crew_seen s WHERE s.id = crew.id)
"""

SOFT_DELETE = """
UPDATE crew SET deleted_at = now(), updated_at = now()
WHERE deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM crew_seen s WHERE s.id = crew.id)
"""

INSERT_REJECTS = """
INSERT INTO ingest_rejects (run_id, record_id, errors, raw)
SELECT %s, r.record_id, r.errors, coalesce(r.raw, 'null'::jsonb)
FROM jsonb_to_recordset(%s::jsonb) AS r(record_id text, errors jsonb, raw jsonb)
"""

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class MassDeleteRefused(Exception):
    pass


@dataclass(frozen=True)
class PageResult:
    inserted: int
    updated: int
    unchanged: int
    repeated_ids: list[str]


def begin(cursor: Any) -> int:
    """Create the run's staging tables; return the number of active crew before the run."""
    cursor.execute(SETUP)
    cursor.execute("SELECT count(*) FROM crew WHERE deleted_at IS NULL")
    return int(cursor.fetchone()[0])


def load_page(cursor: Any, crew: list[CrewBase]) -> PageResult:
    cursor.execute("TRUNCATE crew_page")
    cursor.copy_expert(f"COPY crew_page ({COLUMNS}) FROM STDIN", copy_buffer(crew))
    cursor.execute(UPSERT_PAGE)
    repeated, inserted, updated = cursor.fetchone()
    unchanged = len(crew) - len(repeated) - inserted - updated
    return PageResult(inserted, updated, unchanged, list(repeated))


def soft_delete_vanished(
    cursor: Any, active_before: int, max_fraction: float, allow_mass_delete: bool
) -> int:
    """Soft-delete crew the upstream no longer returns, refusing a mass deletion unless allowed."""
    cursor.execute(COUNT_VANISHED)
    vanished = int(cursor.fetchone()[0])
    if vanished and not allow_mass_delete and vanished > max_fraction * active_before:
        raise MassDeleteRefused(
            f"refusing to soft-delete {vanished} of {active_before} active crew "
            f"(more than INGEST_MAX_DELETE_FRACTION={max_fraction}); "
            "trigger the run with allow_mass_delete=true to accept"
        )
    cursor.execute(SOFT_DELETE)
    return int(cursor.rowcount)


def save_rejects(cursor: Any, run_id: int, rejects: Iterable[Any]) -> None:
    rows = [{"record_id": r.record_id, "errors": r.errors, "raw": r.raw} for r in rejects]
    if rows:
        cursor.execute(INSERT_REJECTS, (run_id, jsonb_text(rows)))


def jsonb_text(value: Any) -> str:
    """JSON for a jsonb parameter: jsonb cannot hold U+0000, so it becomes U+FFFD."""
    return _JSON_NUL.sub(r"\1\\ufffd", json.dumps(value))


def copy_buffer(crew: list[CrewBase]) -> io.StringIO:
    return io.StringIO("".join(copy_line(member) for member in crew))


def copy_line(member: CrewBase) -> str:
    """One row in COPY text format; validation guarantees no NUL and hex-only launch ids."""
    values = (
        member.id,
        member.name.translate(_COPY_ESCAPES),
        member.status.value,
        optional(member.agency),
        optional(member.image),
        optional(member.wikipedia),
        "{" + ",".join(member.launches) + "}",
    )
    return "\t".join(values) + "\n"


def optional(text: str | None) -> str:
    return "\\N" if text is None else text.translate(_COPY_ESCAPES)
