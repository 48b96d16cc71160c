"""Expected failures said in one line: what is wrong, which setting, and what to do about it.

No database access and no settings here (invalid settings are reported by app.config, which
imports nothing of ours): only the wording, and the checks a command makes before it starts.
Unexpected errors are never translated; they keep their traceback.
"""

import errno
import re
import socket
import sys
from typing import NoReturn

import psycopg2  # type: ignore[import-untyped]
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.redaction import redacted_url

# (pattern in the driver's message, what it means, what to do); first match wins
DATABASE_CAUSES = (
    (r"password authentication failed|no password supplied", "authentication failed",
     "fix the user or password in DATABASE_URL"),
    (r'role "[^"]+" does not exist', "authentication failed: no such user",
     "fix the user in DATABASE_URL"),
    (r'database "[^"]+" does not exist', "the database does not exist",
     "create it (createdb) or fix the database name in DATABASE_URL"),
    (r"could not translate host name|Name or service not known", "unknown host",
     "fix the host in DATABASE_URL"),
    (r"Connection refused|No such file or directory", "connection refused",
     "start PostgreSQL, or fix the host and port in DATABASE_URL"),
    (r"timeout expired|timed out", "no answer in time",
     "check the host and port in DATABASE_URL, and the network"),
    (r"too many clients already|remaining connection slots are reserved",
     "no free connection slot", "wait, or raise the server's max_connections"),
    (r"the database system is (starting up|shutting down|in recovery mode)",
     "the server is starting or stopping", "wait for it, then try again"),
)  # fmt: skip


# What to do when a run could not read the upstream: the CLI, the log and the status page say it.
UPSTREAM_HINT = (
    "check that SPACEX_API_URL is right and reachable from here; "
    "`make demo` serves the recorded snapshot locally"
)
# A stored run error from the extract step names its page first (app/ingest/extract.py)
UPSTREAM_ERROR = re.compile(r"page \d+: ")


def run_error_hint(error: str | None) -> str | None:
    """The hint for a run's stored error, as `crew-etl ingest` gives it when the run fails."""
    return UPSTREAM_HINT if error and UPSTREAM_ERROR.match(error) else None


class Problem(Exception):
    """An expected failure: its message is the whole report (one line), `code` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def masked_url(url: str) -> str:
    """The URL with every form of its password as *** (userinfo, `?password=`), fit for a
    terminal or a log line."""
    try:
        shown = redacted_url(url)
    except ArgumentError:
        return "(not a URL)"
    return shown.replace("+psycopg2://", "://", 1)  # as the operator wrote it


def database_problem(exc: BaseException, url: str | None) -> Problem | None:
    """The database could not be reached or would not let us in; None for anything else."""
    driver_error = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(driver_error, psycopg2.OperationalError):
        return None
    message = str(driver_error)
    for pattern, meaning, fix in DATABASE_CAUSES:
        if re.search(pattern, message):
            where = f"DATABASE_URL={masked_url(url)}" if url else "the embedded PostgreSQL"
            return Problem(f"database unavailable ({meaning}) at {where}: {fix}")
    return None


def database_cause_line(exc: BaseException) -> str:
    """The first line of the driver's message (`FATAL:  password authentication failed ...`)."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.split("\n", 1)[0].removeprefix("FATAL:").strip()


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something listens there already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_port(host: str, port: int, how: str) -> None:
    """Refuse to start on a port in use, before anything slow (migrations) runs."""
    if port_in_use(host, port):
        raise Problem(f"port {port} is in use on {host}; {how.format(port=port + 1)}", code=2)


def exit_with(problem: Problem) -> NoReturn:
    sys.stderr.write(f"{problem}\n")
    raise SystemExit(problem.code)
