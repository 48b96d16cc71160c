"""A run that changes most of a large crew rebuilds it beside the old one instead of updating it
in place. No HTTP.

An update writes a new entry for its row in every index of crew (updated_at changes, so none is
a HOT update), the name trigram index included: a change of every member cost twice the first
load of the same crew. So once a run's first pages show that it changes most of what it reads,
it keeps crew's writers out (SHARE lock: readers go on), and writes what is left of the run into
a stage table shaped like crew with its primary key only (app/ingest/bulk.py): the new and
changed members as its pages bring them, the vanished ones soft-deleted, then every other row of
crew as it is. The stage gets crew's indexes, built once over its rows, and moves into crew's
place as a first load's does. Versions are written as on the plain path.

A run keeps the plain path if crew is small, if its sample changes a third or less, if half of
the run is already done, if it is a dry run, if crew has columns a rebuild would not carry (ones
the migrations did not make) or anything crew_catalog.REPLACEABLE rules out, or if crew's
writers do not let go in time.
"""

from fractions import Fraction
from typing import Any

import structlog
from psycopg2 import errorcodes  # type: ignore[import-untyped]

from app.ingest import bulk, load
from app.models import CREW_FIELDS

log = structlog.get_logger("crew_etl.ingest")

MIN_ACTIVE = 10_000  # below this, building the indexes costs more than it saves (see docs)
SAMPLE = Fraction(1, 50)  # decide once the run has read this much of crew...
BY = Fraction(1, 2)  # ... and while it has read no more than this
CHANGED = Fraction(1, 3)  # rebuild when more than this of what it read is new or changed
HOLD_WRITERS = "LOCK TABLE crew IN SHARE MODE"
KNOWN_COLUMNS = (*CREW_FIELDS, "created_at", "updated_at", "deleted_at")
# Every row of crew the run did not put into the stage: unchanged, kept, deleted before, or
# written by the run's pages before it switched (its transaction sees them).
REST = """
INSERT INTO {stage} ({columns}) SELECT {columns} FROM crew c
WHERE NOT EXISTS (SELECT FROM {stage} s WHERE s.id = c.id)
"""


def worth_it(active_before: int, read: int, changed: int) -> bool:
    """Whether a run that has read `read` valid records of a crew of `active_before` active
    members, `changed` of them new or changed, should rebuild crew from here on."""
    return (
        active_before >= MIN_ACTIVE
        and SAMPLE * active_before <= read <= BY * active_before
        and changed > CHANGED * read
    )


def switch(cursor: Any, run_id: int) -> bulk.Stage | None:
    """Start rebuilding crew in a stage table; None if it must stay on the plain path.

    Crew's writers wait from here to the run's commit: a row one of them wrote after the stage
    copied it would be lost with the old table."""
    if set(bulk.columns(cursor)) != set(KNOWN_COLUMNS) or not bulk.replaceable(cursor):
        log.info("crew cannot be rebuilt; the run updates it in place")
        return None
    cursor.execute("SAVEPOINT crew_rewrite")
    try:
        bulk.lock_briefly(cursor, HOLD_WRITERS)
    except Exception as exc:
        if bulk.refused(exc) not in (errorcodes.LOCK_NOT_AVAILABLE, errorcodes.DEADLOCK_DETECTED):
            raise
        cursor.execute("ROLLBACK TO SAVEPOINT crew_rewrite")
        log.info("crew's writers did not let go; the run updates it in place")
        return None
    cursor.execute("RELEASE SAVEPOINT crew_rewrite")
    load.widen_name_bounds(cursor)  # for the rows its pages wrote into crew so far
    staged = bulk.create(cursor, run_id, replaces_rows=True)
    log.info("the run changes most of crew; rebuilding it", table=staged.table)
    return staged


def copy_rest(cursor: Any, staged: bulk.Stage) -> None:
    """Complete the stage with crew's rows the run did not write into it."""
    listed = ", ".join(f'"{name}"' for name in staged.columns)
    cursor.execute(REST.format(stage=staged.table, columns=listed))
