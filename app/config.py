import sys
from pathlib import Path
from typing import Annotated, Literal

import httpx
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

WEBHOOK_EVENT_TYPES = (
    "ingest.run.succeeded",
    "ingest.run.failed",
    "ingest.run.cancelled",
    "ingest.schema.drifted",
    "ingest.freshness.stale",
    "ingest.freshness.recovered",
    "ingest.schedule.paused",
    "ingest.schedule.resumed",
    "ingest.dry_run.finished",
)
# Sent only when WEBHOOK_EVENTS names them: a success every interval is noise for most teams.
OPT_IN_EVENTS = ("ingest.run.succeeded", "ingest.dry_run.finished")
# The Standard Webhooks retry schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h.
WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def comma_separated(value: object) -> object:
    """`a, b` in the environment; a list from code or tests stays a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob comes from the environment (or `.env`); names are part of the contract."""

    # An empty variable means "not set" (compose passes every setting as `${NAME:-}`).
    # Errors name the setting and the rule, never the value: it may be a secret or a password.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    # None starts the embedded PostgreSQL under EMBEDDED_PG_DIR.
    DATABASE_URL: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "SQLALCHEMY_URL"),
        description=(
            "SQLAlchemy/PostgreSQL URL; `postgres://` and `postgresql://` are accepted and use "
            "psycopg2. Unset: the embedded PostgreSQL in `EMBEDDED_PG_DIR`. `SQLALCHEMY_URL` is an "
            "alias (`DATABASE_URL` wins)"
        ),
    )
    EMBEDDED_PG_DIR: Path = Field(
        default=PROJECT_ROOT / ".data" / "postgres",
        description="Data directory of the embedded PostgreSQL (`make reset` deletes it)",
    )
    MIGRATE_ON_START: bool = Field(
        default=True,
        description=(
            "Run `alembic upgrade head` when the service starts (and before `crew-etl ingest`)"
        ),
    )
    DATABASE_DIRECT_URL: str | None = Field(
        default=None,
        description="Optional: where runs load and migrations run, bypassing a transaction-mode "
        "pooler that DATABASE_URL points at (see Explanation: topology)",
    )
    DATABASE_READ_URL: str | None = Field(
        default=None,
        description="Optional: a streaming replica for crew reads (GET /crew, /crew/{id}, "
        "history, as_of); reads fall back to DATABASE_URL while it is down or lags",
    )
    READ_MAX_LAG_SECONDS: float = Field(
        default=30,
        ge=0,
        description="Replica lag past which crew reads go to the primary",
    )

    SPACEX_API_URL: str = Field(
        default="https://api.spacexdata.com",
        description="Upstream base URL (only ever taken from configuration)",
    )
    INGEST_PAGE_SIZE: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Records asked for per page",
    )
    INGEST_MAX_PAGES: int = Field(
        default=10_000,
        ge=1,
        description="Page cap of one run",
    )
    INGEST_MAX_RESPONSE_BYTES: int = Field(
        default=10_000_000,
        ge=1,
        description="Size cap of one page's body after decoding, enforced while streaming",
    )
    INGEST_MAX_DELETE_FRACTION: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "A run may not soft-delete more than this share of the active crew unless "
            "`allow_mass_delete=true` (compared exactly: `0.29` of 100 allows 29)"
        ),
    )
    INGEST_MAX_REJECTS_PER_RUN: int = Field(
        default=1000,
        ge=0,
        description=(
            "Rejects stored per run; the rest are counted in `records_rejected` and "
            "`rejects_not_stored`"
        ),
    )
    INGEST_MAX_REJECT_FRACTION: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "A run that rejects more than this share of the records fetched fails and loads nothing"
        ),
    )
    INGEST_INTERVAL_SECONDS: float = Field(
        default=0,
        ge=0,
        description="Scheduled ingest interval; `0` turns the schedule off",
    )
    INGEST_API_TOKEN: str | None = Field(
        default=None, description="When set, write endpoints need `Authorization: Bearer <token>`"
    )
    # The status page warns when no run succeeded for this long; None: twice the interval, or a
    # day without a schedule (see stale_after_seconds).
    STATUS_STALE_AFTER_SECONDS: float | None = Field(
        default=None,
        gt=0,
        description=(
            "The status page warns when no run succeeded for this long. Unset: twice the interval, "
            "or a day without a schedule"
        ),
    )

    HTTP_TIMEOUT_SECONDS: float = Field(
        default=10,
        gt=0,
        description="Connect/read/write timeout of each upstream request",
    )
    HTTP_RETRIES: int = Field(
        default=4,
        ge=0,
        description=(
            "Retries after the first attempt (connect errors, timeouts, 429, 5xx; not an unknown "
            "host)"
        ),
    )
    HTTP_BACKOFF_INITIAL_SECONDS: float = Field(
        default=0.5,
        ge=0,
        description="First backoff wait; doubles each retry, with jitter",
    )
    HTTP_BACKOFF_MAX_SECONDS: float = Field(
        default=30,
        ge=0,
        description="Cap of one backoff wait, `Retry-After` included",
    )
    HTTP_PAGE_DEADLINE_SECONDS: float = Field(
        default=120,
        gt=0,
        allow_inf_nan=False,
        description=(
            "One page must arrive within this: connect, headers, body, every attempt and the "
            "waits between them; the connection is cut when it passes"
        ),
    )

    # A run whose process has not proved it is alive for this long is ended `failed` by any
    # process that looks; its heartbeat comes every sixth of it (at most every 5 s).
    INGEST_STALE_AFTER_SECONDS: float = Field(
        default=60,
        ge=1,
        description=(
            "A queued or running run whose process has shown no sign of life for this long is ended"
            " `failed` (`abandoned: no heartbeat since ...`) by any process; heartbeats come every "
            "sixth of it, at most every 5 s"
        ),
    )
    INGEST_RUN_TIMEOUT_SECONDS: float = Field(
        default=3600,
        gt=0,
        description=(
            "A run still going after this fails (`timed out: the run passed "
            "INGEST_RUN_TIMEOUT_SECONDS ...`)"
        ),
    )

    # API reads: how long to wait for a connection, for a free one in the pool, for a statement;
    # past any of them a read answers 503 with Retry-After instead of hanging.
    DB_CONNECT_TIMEOUT_SECONDS: int = Field(
        default=5,
        ge=1,
        description="How long opening a database connection may take",
    )
    DB_POOL_TIMEOUT_SECONDS: float = Field(
        default=5,
        gt=0,
        description="How long a request waits for a free pooled connection",
    )
    DB_STATEMENT_TIMEOUT_SECONDS: float = Field(
        default=10,
        gt=0,
        description=(
            "`statement_timeout` of API requests' statements (runs and migrations have none); past "
            "any of these three a request answers `503` with `Retry-After`"
        ),
    )

    # Webhooks (docs/how-to/webhooks.md): where run outcomes are sent, signed by the Standard
    # Webhooks specification.
    WEBHOOK_URL: Annotated[list[str], NoDecode] = Field(
        default=[], description="Receivers of webhook events, comma-separated http(s) URLs"
    )
    WEBHOOK_SECRET: str | None = Field(
        default=None, description="Signing secret, `whsec_` and base64; required with WEBHOOK_URL"
    )
    WEBHOOK_EVENTS: Annotated[list[str], NoDecode] = Field(
        default=[t for t in WEBHOOK_EVENT_TYPES if t not in OPT_IN_EVENTS],
        description="Event types sent, comma-separated; default all but ingest.run.succeeded "
        "and ingest.dry_run.finished",
    )
    WEBHOOK_FORMAT: Literal["standard", "slack"] = Field(
        default="standard",
        description='`standard`: the JSON event; `slack`: a Slack-compatible {"text"} body',
    )
    WEBHOOK_TIMEOUT_SECONDS: float = Field(
        default=15, gt=0, description="How long one delivery attempt waits for the receiver"
    )
    WEBHOOK_RETRY_SCHEDULE_SECONDS: Annotated[list[float], NoDecode] = Field(
        default=list(WEBHOOK_RETRY_SCHEDULE),
        description="Waits before each retry, comma-separated seconds; given up after the last",
    )
    WEBHOOK_CONCURRENCY: int = Field(
        default=4, ge=1, le=64, description="Deliveries one process sends at the same time"
    )
    WEBHOOK_POLL_SECONDS: float = Field(
        default=0.5, gt=0, description="How often the delivery worker looks for due deliveries"
    )
    PUBLIC_BASE_URL: str | None = Field(
        default=None,
        description="The service's address as receivers reach it, for the links in events; "
        "unset: links are paths",
    )
    EVENTS_MAX_STREAMS: int = Field(
        default=100,
        ge=1,
        description="Open `GET /ingest/{id}/events` streams one process serves; beyond, 503",
    )

    WORKERS: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes of `crew-etl serve`; above 1, /metrics adds up every "
        "worker's metrics (prometheus_client's multiprocess mode, its directory managed by the "
        "service)",
    )

    LOG_LEVEL: str = Field(
        default="INFO",
        description=(
            "Log level. `crew-etl ingest` shows WARNING and above unless it is set (its summary "
            "says the rest)"
        ),
    )
    LOG_FORMAT: Literal["json", "console"] = Field(
        default="console",
        description="`json` for JSON lines (the Docker image sets it), `console` for people",
    )

    @field_validator("DATABASE_URL", "DATABASE_DIRECT_URL", "DATABASE_READ_URL")
    @classmethod
    def use_psycopg2_driver(cls, url: str | None) -> str | None:
        """Accept the `postgres://` and `postgresql://` forms hosting providers print."""
        if not url:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg2://" + url.removeprefix(prefix)
        try:  # as the engine will read it: a bad port or host fails here, named, not there
            make_url(url)
        except (ValueError, ArgumentError) as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        return url

    @field_validator("SPACEX_API_URL")
    @classmethod
    def valid_base_url(cls, url: str) -> str:
        """The base URL as written, less a trailing slash on its path; its query is kept whole
        (a signature may end in `/`). The value is never echoed: it may hold a secret."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError(
                "not a valid URL (a / ? or # in a password must be percent-encoded)"
            ) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        path, sep, query = parsed.raw_path.partition(b"?")
        return str(parsed.copy_with(raw_path=path.rstrip(b"/") + sep + query))

    @field_validator("INGEST_API_TOKEN")
    @classmethod
    def empty_token_means_open(cls, token: str | None) -> str | None:
        return token or None

    @field_validator(
        "WEBHOOK_URL", "WEBHOOK_EVENTS", "WEBHOOK_RETRY_SCHEDULE_SECONDS", mode="before"
    )
    @classmethod
    def split_commas(cls, value: object) -> object:
        return comma_separated(value)

    @field_validator("WEBHOOK_URL")
    @classmethod
    def http_urls_only(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError("each WEBHOOK_URL must start with http:// or https://")
        return urls

    @field_validator("WEBHOOK_EVENTS")
    @classmethod
    def known_events(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(WEBHOOK_EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(WEBHOOK_EVENT_TYPES)}")
        return events

    @field_validator("WEBHOOK_RETRY_SCHEDULE_SECONDS")
    @classmethod
    def waits_not_negative(cls, waits: list[float]) -> list[float]:
        if any(wait < 0 for wait in waits):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE_SECONDS holds seconds, none negative")
        return waits

    @field_validator("PUBLIC_BASE_URL")
    @classmethod
    def base_without_slash(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    @model_validator(mode="after")
    def secret_with_standard_urls(self) -> "Settings":
        """A standard webhook is always signed: a receiver must be able to trust it."""
        if self.WEBHOOK_URL and self.WEBHOOK_FORMAT == "standard" and not self.WEBHOOK_SECRET:
            raise ValueError("WEBHOOK_URL is set: set WEBHOOK_SECRET (whsec_...) too")
        if self.WEBHOOK_SECRET is not None:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(self.WEBHOOK_SECRET)
            except Exception:
                raise ValueError("WEBHOOK_SECRET must be whsec_ followed by base64") from None
        return self

    @property
    def database_urls(self) -> list[str | None]:
        return [self.DATABASE_URL, self.DATABASE_DIRECT_URL, self.DATABASE_READ_URL]

    @property
    def heartbeat_seconds(self) -> float:
        return min(5.0, self.INGEST_STALE_AFTER_SECONDS / 6)

    @property
    def stale_after_seconds(self) -> float:
        if self.STATUS_STALE_AFTER_SECONDS is not None:
            return self.STATUS_STALE_AFTER_SECONDS
        return 2 * self.INGEST_INTERVAL_SECONDS if self.INGEST_INTERVAL_SECONDS > 0 else 86_400


# Values never shown in an error: they may be or contain a secret.
SECRET_SETTINGS = {"DATABASE_URL", "SQLALCHEMY_URL", "INGEST_API_TOKEN"}


def describe_invalid(error: ValidationError) -> str:
    """Every invalid setting in one line: its name, the value given (secrets masked), why."""
    parts = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "settings"
        given = "***" if name in SECRET_SETTINGS else repr(problem.get("input"))
        parts.append(f"{name}={given}: {problem['msg'][0].lower()}{problem['msg'][1:]}")
    return f"invalid settings: {'; '.join(parts)} (fix them in the environment or .env)"


def load_settings() -> Settings:
    """The settings, or exit 2 with one line naming each invalid value (no traceback: this is
    the operator's to fix, not a bug)."""
    try:
        return Settings()
    except ValidationError as error:
        sys.stderr.write(describe_invalid(error) + "\n")
        raise SystemExit(2) from None


settings = load_settings()
