"""A run's change list: derived from the versions a real run committed, or kept in
`ingest_changes` for a dry run, whose versions were rolled back. No HTTP."""

from typing import IO, Any

from app.models import CREW_FIELDS


def member_json(alias: str) -> str:
    """SQL for a version's member fields as one jsonb object."""
    pairs = ", ".join(
        f"'{name}', {alias}.{'crew_id' if name == 'id' else name}" for name in CREW_FIELDS
    )
    return f"jsonb_build_object({pairs})"


# The versions run %(run_id)s opened, each beside the version it closed (same member, valid_to
# equal to the new valid_from), as (crew_id, op, changed). `changed` holds the fields whose
# values differ; an insert has no before and a delete no after, so they list the whole member.
CHANGES_FROM_VERSIONS = f"""
SELECT n.crew_id, n.op, (
    SELECT coalesce(
        jsonb_object_agg(key, jsonb_build_object('before', b.value, 'after', a.value)), '{{}}'
    )
    FROM jsonb_each(CASE WHEN n.op <> 'delete' THEN {member_json("n")} END) a
    FULL JOIN jsonb_each(CASE WHEN n.op <> 'insert' THEN {member_json("p")} END) b USING (key)
    WHERE a.value IS DISTINCT FROM b.value
) AS changed
FROM crew_versions n
LEFT JOIN crew_versions p ON p.crew_id = n.crew_id AND p.valid_to = n.valid_from
WHERE n.opened_run_id = %(run_id)s
"""

CHANGES_OF_DRY_RUN = """
SELECT crew_id, op, changed FROM ingest_changes WHERE run_id = %(run_id)s
"""


def source(dry_run: bool) -> str:
    return CHANGES_OF_DRY_RUN if dry_run else CHANGES_FROM_VERSIONS


def page_sql(dry_run: bool) -> tuple[str, str]:
    """(count SQL, page SQL) over a run's changes, optionally of one op, in crew id order."""
    where = "WHERE %(op)s::text IS NULL OR op = %(op)s::text"
    return (
        f"SELECT count(*) FROM ({source(dry_run)}) AS c {where}",
        f"SELECT crew_id, op, changed FROM ({source(dry_run)}) AS c {where} "
        "ORDER BY crew_id LIMIT %(limit)s OFFSET %(offset)s",
    )


def count_by_op_sql(dry_run: bool) -> str:
    return f"SELECT op, count(*) FROM ({source(dry_run)}) AS c GROUP BY op ORDER BY op"


def spool(cursor: Any, run_id: int, target: IO[bytes]) -> None:
    """Write the changes of run `run_id`, still uncommitted in this transaction, to `target`."""
    query = cursor.mogrify(CHANGES_FROM_VERSIONS, {"run_id": run_id}).decode()
    cursor.copy_expert(f"COPY (SELECT {run_id}, * FROM ({query}) AS c) TO STDOUT", target)


def keep(cursor: Any, source: IO[bytes]) -> None:
    """Store spooled changes (of a dry run, after its rollback) in `ingest_changes`."""
    cursor.copy_expert("COPY ingest_changes (run_id, crew_id, op, changed) FROM STDIN", source)
