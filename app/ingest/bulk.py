"""A first load builds crew in a table of its own and moves it in at the end, in the run's
transaction. No HTTP.

Written row by row, crew's secondary indexes cost more than the rows themselves (a COPY of
200,000 members takes about 6 times as long with them as with the primary key alone), and every
read during the run passes the run's uncommitted entries in them. Built once over rows already
in place, they cost about half as much. So when crew has no row at all, a run writes its pages
into a stage table that has crew's columns and primary key only (pages keep being upserted and
versioned by the same statement, app/ingest/load.py), then builds on it every index crew has
(read from the catalog, whatever the migrations made of them), widens the name bounds for its
members and analyzes it; only then does it lock crew, drop the empty table and rename the stage
into its place, with crew's index, constraint and trigger names, grants and comment. Readers
wait for that lock only for the renames and the commit, never for the load.

Anything that would not survive the move (another owner, row security, rules, extended
statistics, a publication, column grants, foreign keys) keeps the run on the plain path. If
crew gained rows meanwhile, or the lock is not granted in time, the stage's rows are inserted
into crew instead: slower, same outcome.

A run that changes most of a large crew rebuilds it in a stage the same way
(app/ingest/rewrite.py): `replaces_rows`, crew's writers held off until the commit, and, if
the move cannot be made, the rows that differ merged into crew.
"""

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from psycopg2 import errorcodes  # type: ignore[import-untyped]

from app.ingest import crew_catalog

log = structlog.get_logger("crew_etl.ingest")

# Index builds sort in memory up to this much (the server's default, 64 MB, spills a GIN build
# of 200,000 names to disk); the transaction's setting only.
BUILD_MEMORY = "SET LOCAL maintenance_work_mem = '256MB'"
WIDEN_FOR_MEMBERS = "SELECT crew_name_trigrams_widen_for_members(%s::jsonb)"
# Pages per call: the names of all 200 pages of a 200,000-member load in one parameter cost the
# process 35 MB at its peak (the string, its quoted copy, the query).
WIDEN_PAGES = 20
# Connections that widen at once, each for its share of the pages: the widening outlasts the
# index builds (2.0 s against 1.7 s for 200,000 members), and one connection alone leaves a
# core idle once they end.
WIDENINGS = 2
# pg_trigger.tgenabled other than the default "O" (fires unless replicating)
TRIGGER_MODES = {"D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}
LOCK_TIMEOUT = "2s"  # readers queue behind the lock request while it waits: keep it short
LOCK_TRIES = 5


@dataclass(frozen=True)
class Stage:
    table: str
    primary_key: tuple[str, str]  # crew's constraint name, definition
    indexes: dict[str, str]  # crew's index name -> its definition on the stage
    triggers: list[tuple[str, str, str]]
    reloptions: list[str] | None
    comment: str | None
    grants: list[str]
    columns: tuple[str, ...]  # crew's, but generated ones
    replaces_rows: bool = False  # a rebuild of a crew with rows (app/ingest/rewrite.py)


def stage(cursor: Any, run_id: int) -> Stage | None:
    """Create the stage table for the run's pages if crew is empty and may be replaced.

    The run takes the lock any writer of crew takes, as a plain run does with its first page:
    crew_name_trigrams_rebuild() waits for it (migration 0016), since the load's name bounds
    commit before its rows are in crew, where a rebuild would not see them."""
    cursor.execute("LOCK TABLE crew IN ROW EXCLUSIVE MODE")
    cursor.execute("SELECT NOT EXISTS (SELECT FROM crew)")
    if not cursor.fetchone()[0] or not replaceable(cursor):
        return None
    return create(cursor, run_id)


def replaceable(cursor: Any) -> bool:
    cursor.execute(crew_catalog.REPLACEABLE)
    return bool(cursor.fetchone()[0])


def create(cursor: Any, run_id: int, replaces_rows: bool = False) -> Stage:
    """An empty table shaped like crew, with its primary key only: crew_load_<run id>."""
    table = f"crew_load_{run_id}"
    cursor.execute(crew_catalog.PRIMARY_KEY)
    primary_key = cursor.fetchone()
    cursor.execute(crew_catalog.INDEXES)
    indexes = {name: on_stage(definition, table, n) for n, (name, definition) in enumerate(cursor)}
    cursor.execute(crew_catalog.TRIGGERS)
    triggers = [tuple(row) for row in cursor.fetchall()]
    cursor.execute(crew_catalog.TABLE_SETTINGS)
    reloptions, comment, grants = cursor.fetchone()
    cursor.execute(crew_catalog.STAGE.format(stage=table))
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey {primary_key[1]}")
    if reloptions:
        cursor.execute(f"ALTER TABLE {table} SET ({', '.join(reloptions)})")
    return Stage(
        table,
        tuple(primary_key),
        indexes,
        triggers,
        reloptions,
        comment,
        list(grants),
        columns(cursor),
        replaces_rows,
    )


def columns(cursor: Any) -> tuple[str, ...]:
    cursor.execute(crew_catalog.COLUMNS)
    return tuple(cursor.fetchone()[0])


def on_stage(definition: str, table: str, number: int) -> str:
    """crew's index definition, renamed and moved to the stage table."""
    return re.sub(
        r'INDEX (?:"(?:[^"]|"")+"|\S+) ON (ONLY )?(\S+\.)?crew ',
        rf"INDEX {table}_{number} ON \2{table} ",
        definition,
        count=1,
    )


def build(cursor: Any, staged: Stage, members: list[str], connect: Callable[[], Any]) -> bool:
    """Build the stage's indexes and analyze it, while WIDENINGS other connections widen the
    name bounds for its members (`members`: a JSON array of [name, agency, status] per page):
    all before the lock, while readers still read crew. False if an index would not build on
    the stage (a definition the catalog checks did not foresee): its rows are then in crew.

    The bounds are widened and committed on their own (connections from `connect`), at the
    same time as the index builds, on the core the run's fetch no longer needs: wider bounds
    than the names in crew cost a reader a longer walk, never a row, so they may commit before
    the rows do, and stay if the run fails.
    """
    widenings = [Widening(members[n::WIDENINGS], connect) for n in range(WIDENINGS)]
    for widening in widenings:
        widening.start()
    try:
        reason = built(cursor, staged)
    finally:
        for widening in widenings:
            widening.join()
    for widening in widenings:
        if widening.error is not None:
            raise widening.error
    if reason is not None:
        put_rows(cursor, staged, reason)
    return reason is None


def built(cursor: Any, staged: Stage) -> str | None:
    """Build and analyze the stage; why not, if the server refused."""
    cursor.execute("SAVEPOINT crew_build")
    try:
        cursor.execute(BUILD_MEMORY)
        for definition in staged.indexes.values():
            cursor.execute(definition)
        cursor.execute(f"ANALYZE {staged.table}")
    except Exception as exc:
        refused(exc)
        cursor.execute("ROLLBACK TO SAVEPOINT crew_build")
        return described(exc)
    cursor.execute("RELEASE SAVEPOINT crew_build")
    return None


def refused(exc: Exception) -> str:
    """The SQLSTATE of a statement the server refused, where the run has another way; anything
    else is raised again: an error not the server's, or a cancel (the run was told to stop)."""
    code = getattr(exc, "pgcode", None)
    if code is None or code == errorcodes.QUERY_CANCELED:
        raise exc
    return str(code)


def described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}"


def inner(array: str) -> str:
    """A JSON array's elements, for joining with another's: '["a", "b"]' -> '"a", "b"'."""
    return array[1:-1].strip() or "null"


class Widening(threading.Thread):
    """crew_name_trigrams_widen_for_members(members) in a transaction of its own."""

    def __init__(self, members: list[str], connect: Callable[[], Any]) -> None:
        super().__init__(name="name-bounds", daemon=True)
        self.members, self.connect = members, connect
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = self.connect()
            try:
                cursor = connection.cursor()
                for start in range(0, len(self.members), WIDEN_PAGES):
                    pages = self.members[start : start + WIDEN_PAGES]
                    cursor.execute(WIDEN_FOR_MEMBERS, ("[" + ",".join(map(inner, pages)) + "]",))
                connection.commit()
            finally:
                connection.close()
        except BaseException as exc:  # handed to the run's thread, which fails the run
            self.error = exc


def move_in(cursor: Any, staged: Stage) -> bool:
    """Put the stage in crew's place (True), or its rows into crew if that cannot be done now: a
    first load's crew gained rows, its lock was not granted in LOCK_TRIES tries, or something the
    catalog checks did not foresee (a view on crew) makes the drop fail."""
    for _ in range(LOCK_TRIES):
        cursor.execute("SAVEPOINT crew_move")
        try:
            if swap(cursor, staged):
                cursor.execute("RELEASE SAVEPOINT crew_move")
                return True
            reason, busy = "crew gained rows during the load", False
        except Exception as exc:
            reason, busy = described(exc), refused(exc) == errorcodes.LOCK_NOT_AVAILABLE
        cursor.execute("ROLLBACK TO SAVEPOINT crew_move")  # raises if the connection is gone
        if not busy:
            break
        log.info("crew is busy; trying the move again", table=staged.table)
    put_rows(cursor, staged, reason)
    return False


def put_rows(cursor: Any, staged: Stage, reason: str) -> None:
    """The stage's rows into crew, when the stage cannot take crew's place."""
    if staged.replaces_rows:
        merge_rows(cursor, staged, reason)
    else:
        insert_rows(cursor, staged, reason)


def lock_briefly(cursor: Any, statement: str) -> None:
    """A LOCK statement that gives up after LOCK_TIMEOUT (readers queue behind its request)."""
    cursor.execute("SELECT current_setting('lock_timeout')")
    before = cursor.fetchone()[0]
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(statement)
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", (before,))


def swap(cursor: Any, staged: Stage) -> bool:
    """Drop crew and rename the stage into its place; False if a first load's crew has rows.
    A rebuild's crew has kept its writers out since it began (app/ingest/rewrite.py)."""
    lock_briefly(cursor, "LOCK TABLE crew IN ACCESS EXCLUSIVE MODE")
    if not staged.replaces_rows:
        cursor.execute("SELECT NOT EXISTS (SELECT FROM crew)")
        if not cursor.fetchone()[0]:
            return False
    cursor.execute("DROP TABLE crew")
    cursor.execute(f"ALTER TABLE {staged.table} RENAME TO crew")
    name = staged.primary_key[0]
    cursor.execute(f"ALTER TABLE crew RENAME CONSTRAINT {staged.table}_pkey TO {quoted(name)}")
    for number, index in enumerate(staged.indexes):
        cursor.execute(f"ALTER INDEX {staged.table}_{number} RENAME TO {quoted(index)}")
    for trigger, definition, enabled in staged.triggers:
        cursor.execute(definition)
        if enabled in TRIGGER_MODES:
            cursor.execute(f"ALTER TABLE crew {TRIGGER_MODES[enabled]} TRIGGER {quoted(trigger)}")
    # the stage's grantees: the role's default privileges for new tables gave it those
    cursor.execute(crew_catalog.GRANTEES)
    for (grantee,) in cursor.fetchall():
        cursor.execute(f"REVOKE ALL ON crew FROM {grantee}")
    for grant in staged.grants:
        cursor.execute(grant)
    if staged.comment is not None:
        cursor.execute("COMMENT ON TABLE crew IS %s", (staged.comment,))
    return True


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def insert_rows(cursor: Any, staged: Stage, reason: str) -> None:
    """A first load's rows into crew as they are (timestamps included)."""
    log.warning("crew not replaced; inserting the first load's rows", reason=reason)
    listed = ", ".join(f'"{name}"' for name in staged.columns)
    cursor.execute(f"INSERT INTO crew ({listed}) SELECT {listed} FROM {staged.table}")
    cursor.execute(f"DROP TABLE {staged.table}")


def merge_rows(cursor: Any, staged: Stage, reason: str) -> None:
    """A rebuilt crew into crew in place: the rows that differ, as they are (timestamps
    included). The stage holds every member, changed or not."""
    log.warning("crew not replaced; writing the rebuilt rows into it", reason=reason)
    fields = [f'"{name}"' for name in staged.columns if name != "id"]
    listed = ", ".join(['"id"', *fields])
    cursor.execute(
        f"INSERT INTO crew AS c ({listed}) SELECT {listed} FROM {staged.table} "
        f"ON CONFLICT (id) DO UPDATE SET ({', '.join(fields)}) = "
        f"ROW({', '.join('excluded.' + f for f in fields)}) "
        f"WHERE ({', '.join('c.' + f for f in fields)}) IS DISTINCT FROM "
        f"({', '.join('excluded.' + f for f in fields)})"
    )
    cursor.execute(f"DROP TABLE {staged.table}")
