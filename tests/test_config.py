"""Settings from the environment: URL normalisation and the SQLALCHEMY_URL alias."""

import pytest

from app.config import Settings


@pytest.fixture(autouse=True)
def no_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SQLALCHEMY_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/crew", "postgresql+psycopg2://u:p@db:5432/crew"),
        (
            "postgresql://u:p@db/crew?sslmode=require",
            "postgresql+psycopg2://u:p@db/crew?sslmode=require",
        ),
        ("postgresql+psycopg2://u@db/crew", "postgresql+psycopg2://u@db/crew"),
    ],
)
def test_database_url_is_normalised_to_psycopg2(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    assert Settings(_env_file=None).DATABASE_URL == expected


def test_sqlalchemy_url_is_an_alias_and_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLALCHEMY_URL", "postgres://alias/db")
    assert Settings(_env_file=None).DATABASE_URL == "postgresql+psycopg2://alias/db"

    monkeypatch.setenv("DATABASE_URL", "postgres://primary/db")
    assert Settings(_env_file=None).DATABASE_URL == "postgresql+psycopg2://primary/db"


def test_defaults_when_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SPACEX_API_URL",
        "INGEST_PAGE_SIZE",
        "HTTP_TIMEOUT_SECONDS",
        "HTTP_RETRIES",
        "HTTP_BACKOFF_MAX_SECONDS",
        "MIGRATE_ON_START",
        "INGEST_MAX_PAGES",
        "INGEST_MAX_RESPONSE_BYTES",
        "INGEST_MAX_DELETE_FRACTION",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)

    assert settings.DATABASE_URL is None  # the embedded server is used
    assert (settings.SPACEX_API_URL, settings.INGEST_PAGE_SIZE) == (
        "https://api.spacexdata.com",
        100,
    )
    assert (settings.HTTP_TIMEOUT_SECONDS, settings.HTTP_RETRIES) == (10, 4)
    assert (settings.HTTP_BACKOFF_MAX_SECONDS, settings.MIGRATE_ON_START) == (30, True)
    assert (settings.INGEST_MAX_PAGES, settings.INGEST_MAX_RESPONSE_BYTES) == (10_000, 10_000_000)
    assert settings.INGEST_MAX_DELETE_FRACTION == 0.5
