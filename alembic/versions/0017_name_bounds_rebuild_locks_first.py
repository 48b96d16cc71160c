"""crew_name_trigrams_rebuild() in PL/pgSQL: it locks crew's writers out before anything else

Migration 0016's rebuild is an SQL function that starts with `LOCK TABLE crew IN SHARE MODE`.
PostgreSQL 15 parses and plans all of an SQL function's statements before it runs the first,
taking a lock on crew for the later ones (ACCESS SHARE) before the SHARE lock is asked for. A
rebuild waiting for an ingest run that moves a stage table into crew's place (a first load, or a
run that rebuilds crew) then holds what the move needs while it waits for the run: a deadlock,
which the move loses, falling back to writing its rows into crew. PL/pgSQL plans each statement
when it reaches it, so the lock comes first. Same statements, same results.

Revision ID: 0017
Revises: 0016
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def revision_0016() -> ModuleType:
    """0016's module, whose SQL template builds the rebuild's statements."""
    path = Path(__file__).with_name("0016_name_bounds_in_agency_and_status_order.py")
    spec = importlib.util.spec_from_file_location("name_bounds_0016", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def statements(module: ModuleType) -> str:
    widen = module.widen(module.KEYS, module.MEMBER_ROWS["crew"])
    return f"{module.HOLD_WRITERS}; DELETE FROM crew_name_trigrams; {widen.strip()};"


def upgrade() -> None:
    module = revision_0016()
    if not module.has_pg_trgm():
        return  # the rebuild does nothing (0012)
    body = f"BEGIN\n{statements(module)}\nEND"
    op.execute(
        module.FUNCTION.format(name=module.REBUILD, arguments="", language="plpgsql", body=body)
    )


def downgrade() -> None:
    module = revision_0016()
    if not module.has_pg_trgm():
        return
    body = statements(module)
    op.execute(module.FUNCTION.format(name=module.REBUILD, arguments="", language="sql", body=body))
