"""Database engine and sessions; starts an embedded PostgreSQL when no URL is configured."""

import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import NullPool
from sqlmodel import Session, create_engine

from app import transaction_settings
from app.config import PROJECT_ROOT, settings
from app.embedded_postgres import start_embedded_postgres
from app.redaction import redacted_url
from app.stale_connections import replace_if_closed

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

CREW_FIRST = "LOCK TABLE crew IN ACCESS SHARE MODE"  # see hold_crew

log = structlog.get_logger("crew_etl")


@functools.cache
def database_url() -> str:
    return settings.DATABASE_URL or start_embedded_postgres(settings.EMBEDDED_PG_DIR)


def database_location() -> str:
    """Where the data lives, fit for a log line: the embedded data directory, or the URL with
    its password hidden."""
    if settings.DATABASE_URL is None:
        return f"embedded PostgreSQL in {settings.EMBEDDED_PG_DIR}"
    return redacted_url(settings.DATABASE_URL)


def direct_url() -> str:
    """Where runs load and migrations run: DATABASE_DIRECT_URL when set (bypassing a pooler),
    else the URL everything else uses (docs/explanation/topology.md)."""
    return settings.DATABASE_DIRECT_URL or database_url()


@functools.cache
def get_engine() -> Engine:
    """API requests: every statement is cut off after DB_STATEMENT_TIMEOUT_SECONDS."""
    # as many connections as the threadpool runs sync endpoints at once (40), so busy moments
    # reuse connections instead of opening and closing overflow ones
    return make_engine(40, 10, statement_timeout=settings.DB_STATEMENT_TIMEOUT_SECONDS)


@functools.cache
def background_engine() -> Engine:
    """Ingest runs, their heartbeats and migrations: a pool of their own, so API reads that
    exhaust theirs can never keep a run from proving it is alive or from finishing; no
    statement timeout (a load or a migration may take long). Through DATABASE_DIRECT_URL when
    set: a run's load transaction lasts minutes and would hold a pooler's server connection,
    one of its few, for all of them."""
    return make_engine(4, 4, statement_timeout=None, url=direct_url())


@functools.cache
def probe_engine() -> Engine:
    """Readiness checks: a fresh connection each time, nothing waits on a pool."""
    return make_engine(0, 0, statement_timeout=1, connect_timeout=2)


def make_engine(
    pool_size: int,
    max_overflow: int,
    statement_timeout: float | None,
    connect_timeout: int = 0,
    url: str | None = None,
) -> Engine:
    """No session state: settings go with each transaction (app/transaction_settings.py), so
    the engine works as well behind PgBouncer in transaction mode as on a direct connection."""
    connect_args = {
        "application_name": "crew-etl",
        "connect_timeout": connect_timeout or settings.DB_CONNECT_TIMEOUT_SECONDS,
        # a server that vanished without closing the connection is noticed in about 25 s
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if pool_size == 0:
        engine = create_engine(url or database_url(), poolclass=NullPool, connect_args=connect_args)
    else:
        engine = create_engine(
            url or database_url(),
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=settings.DB_POOL_TIMEOUT_SECONDS,
            connect_args=connect_args,
        )
        # instead of pool_pre_ping, whose SELECT 1 on every checkout cost a read nearly as much
        # as its statement
        event.listen(engine, "checkout", replace_if_closed)
    transaction_settings.install(engine, statement_timeout)
    return engine


@functools.cache
def autocommit_engine() -> Engine:
    return get_engine().execution_options(isolation_level="AUTOCOMMIT")


def get_session() -> Iterator[Session]:
    """A request's session, in autocommit: each statement is its own transaction, so nothing
    stays open, or locked, while the response is sent and the session closed after it."""
    with Session(autocommit_engine()) as session:
        yield session


def get_read_connection() -> Iterator[Connection]:
    """A pooled connection to the primary in autocommit (see autocommit_connection)."""
    yield from autocommit_connection(get_engine())


def autocommit_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection in autocommit, for reads that are one statement: no BEGIN, and no
    ROLLBACK round trip when it goes back to the pool. The driver's switch is flipped directly:
    SQLAlchemy's isolation_level option would restore the level on check-in with a SET, one
    more round trip per read."""
    with engine.connect() as connection:
        driver: Any = connection.connection.dbapi_connection  # psycopg2's connection
        driver.autocommit = True
        if (driver.isolation_level, driver.readonly, driver.deferrable) != (None, None, None):
            # left set by a transaction of another kind (the status page's): reset once, or
            # every switch back from autocommit sends SETs
            driver.set_session("DEFAULT", "DEFAULT", "DEFAULT")
        try:
            yield connection
        finally:
            if not driver.closed:
                driver.autocommit = False


def snapshot_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection in one REPEATABLE READ, read-only transaction: a response built from
    several statements (a count, a page, their validator) sees one state. psycopg2 sends the
    level with its BEGIN (no session state, so a transaction-mode pooler is fine), and the
    snapshot costs no round trip of its own; the transaction is rolled back before the
    connection goes back to the pool."""
    with engine.connect() as connection:
        driver: Any = connection.connection.dbapi_connection
        driver.autocommit = False
        driver.set_session("REPEATABLE READ", readonly=True)
        try:
            hold_crew(connection)
            yield connection
        finally:
            connection.rollback()
            if not driver.closed:  # as others expect it back; psycopg2 sends nothing for this
                driver.set_session("DEFAULT", "DEFAULT", "DEFAULT")


def hold_crew(connection: Connection) -> None:
    """Begin a REPEATABLE READ transaction by locking crew, before its snapshot is taken.

    A run that rebuilds crew drops the table and renames its stage into its place
    (app/ingest/bulk.py). A snapshot taken before that commits, used on crew after it, finds
    the new table's rows too new to see: an empty crew. LOCK takes no snapshot; waiting here,
    the transaction's first query comes after the commit and sees the new rows."""
    connection.exec_driver_sql(CREW_FIRST)


def alembic_config(configure_logger: bool = True) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    # ALEMBIC_CONFIG is alembic's own variable; the Docker image points it at /app/alembic.ini
    config = AlembicConfig(os.environ.get("ALEMBIC_CONFIG", str(PROJECT_ROOT / "alembic.ini")))
    config.attributes["configure_logger"] = configure_logger
    return config


def migrate(configure_logger: bool = False) -> None:
    """Upgrade the schema to head; safe to call from several processes at once."""
    from alembic import command

    command.upgrade(alembic_config(configure_logger), "head")


@functools.cache
def migration_heads() -> frozenset[str]:
    """The newest revision(s) in alembic/versions (read once: they ship with the code)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def schema_is_current(connection: Connection) -> bool:
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    try:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        return set(rows) == migration_heads()
    except ProgrammingError:  # no alembic_version table yet
        return False
