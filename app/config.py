from pathlib import Path
from typing import Annotated, Literal

import httpx
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SQLALCHEMY_URL")
    )
    EMBEDDED_PG_DIR: Path = PROJECT_ROOT / ".data" / "postgres"
    MIGRATE_ON_START: bool = True

    SPACEX_API_URL: str = "https://api.spacexdata.com"
    INGEST_PAGE_SIZE: int = Field(default=100, ge=1, le=10_000)
    INGEST_MAX_PAGES: int = Field(default=10_000, ge=1)
    INGEST_MAX_RESPONSE_BYTES: int = Field(default=10_000_000, ge=1)
    INGEST_MAX_DELETE_FRACTION: float = Field(default=0.5, ge=0, le=1)
    INGEST_MAX_REJECTS_PER_RUN: int = Field(default=1000, ge=0)
    INGEST_MAX_REJECT_FRACTION: float = Field(default=0.5, ge=0, le=1)
    INGEST_INTERVAL_SECONDS: float = Field(default=0, ge=0)
    INGEST_API_TOKEN: str | None = None
    # The status page warns when no run succeeded for this long; None: twice the interval, or a
    # day without a schedule (see stale_after_seconds).
    STATUS_STALE_AFTER_SECONDS: float | None = Field(default=None, gt=0)

    HTTP_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    HTTP_RETRIES: int = Field(default=4, ge=0)
    HTTP_BACKOFF_INITIAL_SECONDS: float = Field(default=0.5, ge=0)
    HTTP_BACKOFF_MAX_SECONDS: float = Field(default=30, ge=0)
    HTTP_PAGE_DEADLINE_SECONDS: float = Field(default=120, gt=0, allow_inf_nan=False)

    # A run whose process has not proved it is alive for this long is ended `failed` by any
    # process that looks; its heartbeat comes every sixth of it (at most every 5 s).
    INGEST_STALE_AFTER_SECONDS: float = Field(default=60, ge=1)
    INGEST_RUN_TIMEOUT_SECONDS: float = Field(default=3600, gt=0)

    # API reads: how long to wait for a connection, for a free one in the pool, for a statement;
    # past any of them a read answers 503 with Retry-After instead of hanging.
    DB_CONNECT_TIMEOUT_SECONDS: int = Field(default=5, ge=1)
    DB_POOL_TIMEOUT_SECONDS: float = Field(default=5, gt=0)
    DB_STATEMENT_TIMEOUT_SECONDS: float = Field(default=10, gt=0)

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
    # Open `GET /ingest/{id}/events` streams a process serves at once; beyond, 503 + Retry-After.
    EVENTS_MAX_STREAMS: int = Field(default=100, ge=1)

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "console"] = "console"

    @field_validator("DATABASE_URL")
    @classmethod
    def use_psycopg2_driver(cls, url: str | None) -> str | None:
        """Accept the `postgres://` and `postgresql://` forms hosting providers print."""
        if not url:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg2://" + url.removeprefix(prefix)
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
    def heartbeat_seconds(self) -> float:
        return min(5.0, self.INGEST_STALE_AFTER_SECONDS / 6)

    @property
    def stale_after_seconds(self) -> float:
        if self.STATUS_STALE_AFTER_SECONDS is not None:
            return self.STATUS_STALE_AFTER_SECONDS
        return 2 * self.INGEST_INTERVAL_SECONDS if self.INGEST_INTERVAL_SECONDS > 0 else 86_400


settings = Settings()
