"""Migrations own the schema: they match the models and go down and up cleanly."""

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from app.db import alembic_config, get_engine, migrate, migration_heads, schema_is_current
from tests.conftest import query_one, wait_until
from tests.test_walk_start import UNCOVERED

EXCLUDED = {"ix_crew_name_trgm"}  # created only where pg_trgm exists; see migration 0003
ESTIMATE_FUNCTION = "SELECT count(*) FROM pg_proc WHERE proname = 'planner_row_estimate'"


def model_differences() -> list[object]:
    with get_engine().connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, *_: name not in EXCLUDED,
            },
        )
        return list(compare_metadata(context, SQLModel.metadata))


def schema_at_head() -> bool:
    with get_engine().connect() as connection:
        return schema_is_current(connection)


def test_models_and_migrations_agree() -> None:
    assert model_differences() == []
    assert schema_at_head()


def test_downgrade_to_base_then_upgrade_to_head() -> None:
    config = alembic_config(configure_logger=False)
    try:
        command.downgrade(config, "base")
        tables = set(inspect(get_engine()).get_table_names())
        assert tables & {"crew", "ingest_runs", "ingest_rejects"} == set()
        assert query_one(ESTIMATE_FUNCTION)[0] == 0
        assert not schema_at_head()
    finally:
        migrate()
    assert model_differences() == []
    assert [query_one("SELECT version_num FROM alembic_version")[0]] == list(migration_heads())
    assert query_one(ESTIMATE_FUNCTION)[0] == 1


def test_trigram_index_exists_exactly_where_pg_trgm_is_available() -> None:
    available = query_one("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")[0]
    indexed = query_one("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_crew_name_trgm'")[0]
    assert indexed == available


FOLDED_NAME_STATISTICS = (
    "SELECT count(*) FROM pg_stats WHERE tablename = 'crew' AND attname = 'name_folded'"
)


def upgrade_with_rows_from(revision: str, insert: str) -> None:
    """Down to `revision`, `insert` rows there, then up to head (head again whatever fails)."""
    config = alembic_config(configure_logger=False)
    try:
        command.downgrade(config, revision)
        with get_engine().begin() as connection:
            connection.exec_driver_sql(insert)
        command.upgrade(config, "head")
    finally:
        migrate()


def test_the_folded_name_has_statistics_right_after_its_migration() -> None:
    """Without them the name filter's `total` is guessed from the pattern, and counted exactly."""
    upgrade_with_rows_from(
        "0010",
        "INSERT INTO crew (id, name, status) "
        "SELECT lpad(to_hex(i), 24, '0'), 'Member ' || i, 'active' "
        "FROM generate_series(1, 50) AS i",
    )
    assert query_one(FOLDED_NAME_STATISTICS)[0] == 1
    assert query_one("SELECT count(*) FROM crew WHERE name_folded = 'member 7'")[0] == 1


TRIGRAM_TRIGGERS = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'crew_name_trigrams_on_%'"
BOUNDS_OF_VIC = (
    "SELECT min(lowest_name), max(highest_name) FROM crew_name_trigrams WHERE trigram = 'vic'"
)


def test_name_trigram_bounds_are_kept_exactly_where_pg_trgm_is_installed() -> None:
    installed = query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")[0]
    assert query_one(TRIGRAM_TRIGGERS)[0] == 2 * installed


def test_the_name_trigram_bounds_start_from_the_crew_already_there() -> None:
    """The migration fills the bounds for the members loaded before it, or their names would
    fall before the start of the walks that should find them."""
    upgrade_with_rows_from(
        "0011",
        "INSERT INTO crew (id, name, status) VALUES "
        "(repeat('1', 24), 'Ada Vic', 'active'), (repeat('2', 24), 'Zed Victor', 'active')",
    )
    assert tuple(query_one(BOUNDS_OF_VIC)) == ("Ada Vic", "Zed Victor")
    assert query_one(UNCOVERED)[0] == 0  # and in agency and status order (0016)


def test_the_bound_triggers_come_with_0016_where_0012_could_not_make_them() -> None:
    """A server that had no pg_trgm at 0012 got no triggers; with pg_trgm at 0016 it gets them,
    or plain writes to crew would never widen the bounds that reads now start from."""
    if not query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")[0]:
        pytest.skip("this server has no pg_trgm")
    upgrade_with_rows_from(
        "0015",
        "DROP TRIGGER crew_name_trigrams_on_insert ON crew; "
        "DROP TRIGGER crew_name_trigrams_on_update ON crew",
    )
    assert query_one(TRIGRAM_TRIGGERS)[0] == 2
    with get_engine().begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO crew (id, name, status, agency) VALUES (repeat('3', 24), 'Qxz', "
            "'retired', 'Zzz')"
        )
    assert query_one(UNCOVERED)[0] == 0


def test_0016_waits_for_a_writer_of_crew_rather_than_fail_on_its_bound_rows() -> None:
    """A write to crew in progress appends bound rows without the new columns when it commits:
    the migration waits for it before it empties the table and adds them."""
    config = alembic_config(configure_logger=False)
    try:
        command.downgrade(config, "0015")
        writer = get_engine().connect()
        transaction = writer.begin()
        writer.exec_driver_sql(
            "INSERT INTO crew (id, name, status) VALUES (repeat('4', 24), 'Wvx', 'active')"
        )
        upgrading = threading.Thread(target=command.upgrade, args=(config, "head"))
        upgrading.start()
        wait_until(lambda: query_one("SELECT count(*) FROM pg_locks WHERE NOT granted")[0] > 0)
        transaction.commit()
        writer.close()
        upgrading.join(60)
        assert {query_one("SELECT version_num FROM alembic_version")[0]} == migration_heads()
        assert query_one(UNCOVERED)[0] == 0
    finally:
        migrate()
