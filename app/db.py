"""Database engine and sessions; starts an embedded PostgreSQL when no URL is configured."""

import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event, make_url
from sqlmodel import Session, create_engine

from app.config import PROJECT_ROOT, settings
from app.embedded_postgres import start_embedded_postgres
from app.stale_connections import replace_if_closed

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


@functools.cache
def database_url() -> str:
    return settings.DATABASE_URL or start_embedded_postgres(settings.EMBEDDED_PG_DIR)


def database_location() -> str:
    """Where the data lives, fit for a log line: the embedded data directory, or the URL with
    its password hidden."""
    if settings.DATABASE_URL is None:
        return f"embedded PostgreSQL in {settings.EMBEDDED_PG_DIR}"
    return make_url(settings.DATABASE_URL).render_as_string(hide_password=True)


@functools.cache
def get_engine() -> Engine:
    engine = create_engine(
        database_url(),
        # as many connections as the threadpool runs sync endpoints at once (40), so busy
        # moments reuse connections instead of opening and closing overflow ones
        pool_size=40,
        max_overflow=10,
        connect_args={"application_name": "crew-etl", "options": "-c timezone=UTC"},
    )
    # instead of pool_pre_ping, whose SELECT 1 on every checkout cost a read nearly as much as
    # its statement
    event.listen(engine, "checkout", replace_if_closed)
    return engine


def get_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


def get_read_connection() -> Iterator[Connection]:
    """A pooled connection in autocommit, for reads that are one statement: no BEGIN, and no
    ROLLBACK round trip when it goes back to the pool. The driver's switch is flipped directly:
    SQLAlchemy's isolation_level option would restore the level on check-in with a SET, one
    more round trip per read."""
    with get_engine().connect() as connection:
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


def schema_is_current() -> bool:
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    heads = migration_heads()
    with get_engine().connect() as connection:
        try:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return set(rows) == heads
        except ProgrammingError:  # no alembic_version table yet
            return False
