"""`uvicorn app.main:app` typed on the command line: a port in use is refused in one line before
start-up migrates, as `crew-etl serve` refuses it. uvicorn imports the app before it binds its
socket, so the check runs at import, with the host and port read by uvicorn's own parser
(options and UVICORN_* variables alike)."""

import multiprocessing
import sys
from pathlib import Path

import click

from app.problems import Problem, check_port, exit_with


def started_by_uvicorn_cli() -> bool:
    """The `uvicorn` script, or `python -m uvicorn` (whose argv[0] is uvicorn/__main__.py)."""
    program = Path(sys.argv[0])
    return program.name == "uvicorn" or program.parent.name == "uvicorn"


def refuse_a_port_in_use() -> None:
    # With --workers or --reload the parent binds and spawned children import the app: the port
    # is then ours, so only a process that was not spawned checks it.
    if not started_by_uvicorn_cli() or multiprocessing.parent_process() is not None:
        return
    from uvicorn.main import main

    try:
        params = main.make_context("uvicorn", sys.argv[1:], resilient_parsing=True).params
    except click.ClickException:
        return  # uvicorn reports its own usage errors
    if params.get("fd") is not None or params.get("uds") or not params.get("port"):
        return
    try:
        check_port(params["host"], params["port"], "uvicorn app.main:app --port {port}")
    except Problem as problem:
        exit_with(problem)
