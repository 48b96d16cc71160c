"""Alembic environment: URL from the app settings, one advisory lock so replicas migrate in turn."""

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import app.change_models  # noqa: F401  (registers the tables on SQLModel.metadata)
import app.event_models  # noqa: F401
import app.notify.models  # noqa: F401
import app.schedule_state  # noqa: F401
from app.config import settings
from app.db import background_engine
from app.logs import configure_logging

MIGRATION_LOCK_KEY = 0x637265775F6D6967  # "crew_mig": serialises concurrent `upgrade`s

# Objects a migration creates only where the server supports them (pg_trgm), so not in the models.
MIGRATION_ONLY_INDEXES = {"ix_crew_name_trgm"}

config = context.config
if config.attributes.get("configure_logger", True):  # `alembic upgrade head` on a command line
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)


def run_migrations_online() -> None:
    with background_engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            include_object=include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations_online()
