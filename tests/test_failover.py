"""Database errors, class by class: which ones a run's finisher waits out and which it gives up
on, and what POST /ingest answers meanwhile. The errors are PostgreSQL's own, raised by the
test database with each SQLSTATE (a trigger, or RAISE), through the real driver.

A read-only failover with real processes, a standby and PgBouncer is in test_topology.py.
"""

from collections.abc import Iterator

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from app import db_errors
from app.db import get_engine
from app.ingest import registry, runs, service
from app.ingest.pipeline import RunCounts
from app.ingest.validate import SchemaDrift
from app.models import RunStatus, RunTrigger
from tests.conftest import run_row

# (SQLSTATE, exception class psycopg2 raises, transient, words in the description)
CLASSES = [
    ("25006", "ReadOnlySqlTransaction", True, "database is read-only"),
    ("08006", "ConnectionFailure", True, "database connection lost"),
    ("08000", "ConnectionException", True, "database connection lost"),
    ("57P01", "AdminShutdown", True, "database shutting down or restarting"),
    ("57P03", "CannotConnectNow", True, "database shutting down or restarting"),
    ("57014", "QueryCanceled", True, "statement cancelled or timed out"),
    ("55P03", "LockNotAvailable", True, "lock not available in time"),
    ("53100", "DiskFull", True, "database out of resources"),
    ("53300", "TooManyConnections", True, "database out of resources"),
    ("58030", "IoError", True, "database system error"),
    ("40001", "SerializationFailure", True, "transaction rolled back by the database"),
    ("40P01", "DeadlockDetected", True, "transaction rolled back by the database"),
    ("25P02", "InFailedSqlTransaction", False, "invalid transaction state"),
    ("42P01", "UndefinedTable", False, "statement refused by the database"),
    ("42501", "InsufficientPrivilege", False, "statement refused by the database"),
    ("23505", "UniqueViolation", False, "constraint violated"),
    ("22P02", "InvalidTextRepresentation", False, "invalid data"),
    ("XX000", "InternalError_", False, "database internal error"),
    ("P0001", "RaiseException", False, "database error"),
]

# Fails the first `times` updates that end a run with the given SQLSTATE, then lets them by
# (counted by a sequence: a counter in a table would roll back with the failure).
FAIL_RUN_ENDS = """
CREATE TABLE fail_run_ends (code text, times int);
CREATE SEQUENCE fail_run_end_calls;
CREATE FUNCTION fail_run_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE wanted text;
BEGIN
    SELECT code INTO wanted FROM fail_run_ends WHERE nextval('fail_run_end_calls') <= times;
    IF wanted IS NOT NULL THEN
        RAISE EXCEPTION 'failing on purpose' USING ERRCODE = wanted;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_run_end BEFORE UPDATE ON ingest_runs
    FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION fail_run_end();
"""
REMOVE = """
DROP TRIGGER IF EXISTS fail_run_end ON ingest_runs; DROP FUNCTION IF EXISTS fail_run_end;
DROP TABLE IF EXISTS fail_run_ends; DROP SEQUENCE IF EXISTS fail_run_end_calls
"""
FAIL_CREATES = """
CREATE OR REPLACE FUNCTION fail_run_create() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'failing on purpose' USING ERRCODE = '25006'; END $$;
CREATE OR REPLACE TRIGGER fail_run_create BEFORE INSERT ON ingest_runs
    FOR EACH ROW EXECUTE FUNCTION fail_run_create();
"""


def raised(code: str) -> DBAPIError:
    with get_engine().connect() as connection:
        try:
            connection.exec_driver_sql(
                f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$"
            )
        except DBAPIError as exc:
            return exc
    raise AssertionError(f"{code} was not raised")


@pytest.mark.parametrize(("code", "driver", "transient", "words"), CLASSES)
def test_every_sqlstate_class_is_classified(
    code: str, driver: str, transient: bool, words: str
) -> None:
    exc = raised(code)
    assert (db_errors.sqlstate(exc), db_errors.driver_cause(exc)) == (code, driver)
    assert db_errors.is_transient(exc) is transient
    assert db_errors.describe(exc) == f"{words} ({driver})"


@pytest.fixture(name="failing_ends")
def failing_ends_fixture() -> Iterator[None]:
    with get_engine().begin() as connection:
        connection.exec_driver_sql(REMOVE)
        connection.exec_driver_sql(FAIL_RUN_ENDS)
    yield
    with get_engine().begin() as connection:
        connection.exec_driver_sql(REMOVE)


@pytest.mark.parametrize(("code", "driver", "transient", "words"), CLASSES)
def test_the_finisher_waits_out_transient_errors_and_gives_up_on_the_rest(
    failing_ends: None, session: Session, code: str, driver: str, transient: bool, words: str
) -> None:
    run = service.create_run(session, RunTrigger.api)
    assert run.id is not None and runs.mark_running(run.id)
    with get_engine().begin() as connection:
        connection.exec_driver_sql("INSERT INTO fail_run_ends VALUES (%s, 2)", (code,))

    with structlog.testing.capture_logs() as logs:  # returns: the background task never dies
        service.finish_unsuccessful(
            run.id, RunStatus.failed, "the cause", RunCounts(), SchemaDrift()
        )

    if transient:  # two refusals, then the record lands
        assert tuple(run_row(run.id)[:2]) == ("failed", "the cause")
    else:  # would be refused the same way forever: logged, left for the reaper
        assert run_row(run.id).status == "running"
        assert [entry["cause"] for entry in logs if entry["event"] == "run end not recorded"] == [
            f"{words} ({driver})"
        ]
    registry.unregister(run.id)


def test_a_read_only_error_is_the_run_error_in_words() -> None:
    exc = raised(db_errors.READ_ONLY)
    assert service.public_error(exc) == "database is read-only (ReadOnlySqlTransaction)"


def test_a_trigger_while_the_database_is_read_only_is_a_503_to_retry(client: TestClient) -> None:
    with get_engine().begin() as connection:
        connection.exec_driver_sql(FAIL_CREATES)
    try:
        response = client.post("/ingest")
        again = client.get("/ingest")  # the connection and the service carry on
    finally:
        with get_engine().begin() as connection:
            connection.exec_driver_sql(
                "DROP TRIGGER fail_run_create ON ingest_runs; DROP FUNCTION fail_run_create"
            )

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "detail": "the database is read-only right now (a failover?); try again shortly",
        "cause": "ReadOnlySqlTransaction",
    }
    assert again.status_code == 200
    assert client.post("/ingest").status_code == 202  # once writable, the next trigger runs
