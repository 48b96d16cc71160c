from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob comes from the environment (or `.env`); names are part of the contract."""

    # An empty variable means "not set" (compose passes every setting as `${NAME:-}`).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # None starts the embedded PostgreSQL under EMBEDDED_PG_DIR.
    DATABASE_URL: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SQLALCHEMY_URL")
    )
    # Optional: where runs load and migrations run, bypassing a transaction-mode pooler that
    # DATABASE_URL points at (docs/explanation/topology.md says when it is worth it).
    DATABASE_DIRECT_URL: str | None = None
    # Optional: a streaming replica for crew reads (GET /crew, /crew/{id}, history, as_of);
    # reads fall back to DATABASE_URL while it is down or lags more than READ_MAX_LAG_SECONDS.
    DATABASE_READ_URL: str | None = None
    READ_MAX_LAG_SECONDS: float = Field(default=30, ge=0)
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
    HTTP_PAGE_DEADLINE_SECONDS: float = Field(default=120, gt=0)

    # A run whose process has not proved it is alive for this long is ended `failed` by any
    # process that looks; its heartbeat comes every sixth of it (at most every 5 s).
    INGEST_STALE_AFTER_SECONDS: float = Field(default=60, ge=1)
    INGEST_RUN_TIMEOUT_SECONDS: float = Field(default=3600, gt=0)

    # API reads: how long to wait for a connection, for a free one in the pool, for a statement;
    # past any of them a read answers 503 with Retry-After instead of hanging.
    DB_CONNECT_TIMEOUT_SECONDS: int = Field(default=5, ge=1)
    DB_POOL_TIMEOUT_SECONDS: float = Field(default=5, gt=0)
    DB_STATEMENT_TIMEOUT_SECONDS: float = Field(default=10, gt=0)

    # Worker processes of `crew-etl serve`; above 1, /metrics adds up every worker's metrics
    # (prometheus_client's multiprocess mode, its directory managed by the service).
    WORKERS: int = Field(default=1, ge=1, le=64)

    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: Literal["json", "console"] = "console"

    @field_validator("DATABASE_URL", "DATABASE_DIRECT_URL", "DATABASE_READ_URL")
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
    def strip_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @field_validator("INGEST_API_TOKEN")
    @classmethod
    def empty_token_means_open(cls, token: str | None) -> str | None:
        return token or None

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


settings = Settings()
