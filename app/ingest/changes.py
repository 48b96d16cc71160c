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


OF_OP = "(%(op)s::text IS NULL OR op = %(op)s::text)"

# A page of the versions run %(run_id)s opened (in crew id order, through the index on
# (opened_run_id, crew_id)), each beside the version it closed (the member's previous one,
# by the primary key read backwards), as (crew_id, op, changed). `changed` holds the fields
# whose values differ; an insert has no before and a delete no after, so they list the whole
# member. The page is cut before `changed` is computed: a skipped row costs an index step.
CHANGES_FROM_VERSIONS = f"""
SELECT n.crew_id, n.op, (
    SELECT coalesce(
        jsonb_object_agg(key, jsonb_build_object('before', b.value, 'after', a.value)), '{{}}'
    )
    FROM jsonb_each(CASE WHEN n.op <> 'delete' THEN {member_json("n")} END) a
    FULL JOIN jsonb_each(CASE WHEN n.op <> 'insert' THEN {member_json("p")} END) b USING (key)
    WHERE a.value IS DISTINCT FROM b.value
) AS changed
FROM (
    SELECT * FROM crew_versions WHERE opened_run_id = %(run_id)s AND {OF_OP}
    ORDER BY crew_id LIMIT %(limit)s OFFSET %(offset)s
) AS n
LEFT JOIN LATERAL (
    SELECT * FROM crew_versions p
    WHERE p.crew_id = n.crew_id AND p.valid_from < n.valid_from
    ORDER BY p.valid_from DESC LIMIT 1
) AS p ON true
ORDER BY n.crew_id
"""
COUNT_FROM_VERSIONS = f"""
SELECT count(*) FROM crew_versions WHERE opened_run_id = %(run_id)s AND {OF_OP}
"""
COUNT_BY_OP_FROM_VERSIONS = """
SELECT op, count(*) FROM crew_versions WHERE opened_run_id = %(run_id)s GROUP BY op ORDER BY op
"""

# A dry run's list, kept in `ingest_changes` (primary key (run_id, crew_id)).
CHANGES_OF_DRY_RUN = f"""
SELECT crew_id, op, changed FROM ingest_changes WHERE run_id = %(run_id)s AND {OF_OP}
ORDER BY crew_id LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_OF_DRY_RUN = f"SELECT count(*) FROM ingest_changes WHERE run_id = %(run_id)s AND {OF_OP}"
COUNT_BY_OP_OF_DRY_RUN = """
SELECT op, count(*) FROM ingest_changes WHERE run_id = %(run_id)s GROUP BY op ORDER BY op
"""


def page_sql(dry_run: bool) -> tuple[str, str]:
    """(count SQL, page SQL) over a run's changes, optionally of one op (`op`, else NULL), in
    crew id order; parameters `run_id`, `op`, `limit`, `offset`."""
    if dry_run:
        return COUNT_OF_DRY_RUN, CHANGES_OF_DRY_RUN
    return COUNT_FROM_VERSIONS, CHANGES_FROM_VERSIONS


def count_by_op_sql(dry_run: bool) -> str:
    return COUNT_BY_OP_OF_DRY_RUN if dry_run else COUNT_BY_OP_FROM_VERSIONS


def spool(cursor: Any, run_id: int, target: IO[bytes]) -> None:
    """Write the changes of run `run_id`, still uncommitted in this transaction, to `target`."""
    every = {"run_id": run_id, "op": None, "limit": None, "offset": 0}
    query = cursor.mogrify(CHANGES_FROM_VERSIONS, every).decode()
    cursor.copy_expert(f"COPY (SELECT {run_id}, * FROM ({query}) AS c) TO STDOUT", target)


def keep(cursor: Any, source: IO[bytes]) -> None:
    """Store spooled changes (of a dry run, after its rollback) in `ingest_changes`."""
    cursor.copy_expert("COPY ingest_changes (run_id, crew_id, op, changed) FROM STDIN", source)
