"""Crew and ingest runs, as tables and API schemas: each SQLModel class is both the Pydantic
model and the ORM table. What runs changed (versions, change lists) is in app/change_models.py."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    Identity,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from app import examples
from app.shapes import ALWAYS_SENT, RejectError, SchemaDriftReport

# One id pattern everywhere: any case is accepted, ids are stored and served in lower case.
HEX24 = r"^[0-9a-fA-F]{24}$"
HTTP_URL = r"^https?://[^\s\x00]+$"
PRINTABLE = r"^[^\x00]*$"  # Postgres text cannot hold NUL
# Not only whitespace, by Python's str.strip() too: it also strips U+001C-U+001F, which the
# regex engine pydantic uses does not count as whitespace.
HAS_TEXT = r"^[^\x00]*[^\s\x00\x1c-\x1f][^\x00]*$"
HEX24_ANY_CASE = HEX24  # the name other modules import

LaunchId = Annotated[str, StringConstraints(pattern=HEX24_ANY_CASE, to_lower=True)]


def strip_lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _strip_or_none(value: Any) -> Any:
    """Surrounding whitespace goes; an agency of only whitespace is no agency."""
    value = _strip(value)
    return (value or None) if isinstance(value, str) else value


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


def _unique_in_order(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def timestamp(**column_kwargs: Any) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), sa_column_kwargs=column_kwargs)


class CrewStatus(StrEnum):
    active = "active"
    inactive = "inactive"
    retired = "retired"
    unknown = "unknown"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.queued, RunStatus.running)


class RunTrigger(StrEnum):
    api = "api"
    cli = "cli"
    schedule = "schedule"


# Crew: the upstream record as validated, stored and served.
class CrewBase(SQLModel):
    id: Annotated[str, BeforeValidator(strip_lower)] = Field(
        primary_key=True,
        max_length=24,
        schema_extra={"pattern": HEX24},
        description="The upstream's crew id, 24 hex digits (served in lower case)",
    )
    # A null name is a reject (the upstream's schema allows it; a member needs a name here).
    name: Annotated[str, BeforeValidator(_strip)] = Field(
        min_length=1, max_length=200, schema_extra={"pattern": HAS_TEXT}, description="Full name"
    )
    status: Annotated[CrewStatus, BeforeValidator(strip_lower)] = Field(
        sa_type=String(16), description="Crew status as the upstream reports it"
    )
    agency: Annotated[str | None, BeforeValidator(_strip_or_none)] = Field(
        default=None,
        max_length=100,
        schema_extra={"pattern": PRINTABLE},
        description="Space agency (NASA, ESA, JAXA, SpaceX, ...); null when the upstream has none",
    )
    image: str | None = Field(
        default=None, max_length=2048, schema_extra={"pattern": HTTP_URL}, description="Portrait"
    )
    wikipedia: str | None = Field(
        default=None,
        max_length=2048,
        schema_extra={"pattern": HTTP_URL},
        description="Wikipedia article",
    )
    launches: Annotated[
        list[LaunchId], BeforeValidator(_none_as_empty), AfterValidator(_unique_in_order)
    ] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(24)), nullable=False, server_default="{}"),
        description="Ids of the launches the member flew on, in upstream order, without repeats",
    )


CREW_FIELDS = tuple(CrewBase.model_fields)


# The table adds bookkeeping: first seen, last changed, soft deletion.
class Crew(CrewBase, table=True):
    __tablename__ = "crew"
    # One (sort key, id) index per sort of GET /crew, serving its filter too (migration 0006).
    __table_args__ = (
        Index("ix_crew_agency_key_id", func.coalesce(func.lower(text("agency")), ""), "id"),
        # Carries the other filters' columns: a name-sorted page is an index-only walk (0011).
        Index(
            "ix_crew_name_id",
            "name",
            "id",
            postgresql_include=["name_folded", "status", "agency", "deleted_at"],
        ),
        Index("ix_crew_status_id", "status", "id"),
        Index("ix_crew_updated_at_id", "updated_at", "id"),
        Index("ix_crew_launches", "launches", postgresql_using="gin"),
    )

    created_at: datetime | None = timestamp(nullable=False, server_default=func.now())
    updated_at: datetime | None = timestamp(nullable=False, server_default=func.now())
    deleted_at: datetime | None = timestamp()
    # lower(name), kept by PostgreSQL: the name filter compares it with LIKE (migration 0011).
    name_folded: str | None = Field(
        default=None, sa_column=Column(Text, Computed("lower(name)", persisted=True))
    )


# Per three letters or digits, the lowest and highest crew name that ever held them (folded),
# and the lowest and highest agency (its sort key) and status of those names, widened by a
# trigger on crew and, for its own rows, by each ingest run (migrations 0012, 0016): a name
# filter on a name, agency or status sort starts its walk where the text's matches can start.
# Rows are only appended (see the migrations), so the bounds of a trigram are the lowest and
# highest over its rows.
class CrewNameTrigram(SQLModel, table=True):
    __tablename__ = "crew_name_trigrams"
    __table_args__ = (
        Index("ix_crew_name_trigrams_lowest", "trigram", "lowest_name"),
        Index("ix_crew_name_trigrams_highest", "trigram", "highest_name"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    trigram: str = Field(sa_type=String(3))
    lowest_name: str = Field(sa_type=String(200))
    highest_name: str = Field(sa_type=String(200))
    lowest_agency: str = Field(sa_type=Text)
    highest_agency: str = Field(sa_type=Text)
    lowest_status: str = Field(sa_type=Text)
    highest_status: str = Field(sa_type=Text)


# What the API returns for a crew member.
class CrewPublic(CrewBase):
    model_config = ConfigDict(  # type: ignore[assignment]  # SQLModel's config is a ConfigDict
        **ALWAYS_SENT, json_schema_extra={"examples": [examples.CREW_MEMBER]}
    )

    created_at: datetime = Field(description="When a run first loaded the member")
    updated_at: datetime = Field(description="When a run last changed the member")
    deleted_at: datetime | None = Field(
        description="When the upstream stopped returning the member (soft deletion); else null"
    )


# Columns an ingest run and its public view share.
class IngestRunBase(SQLModel):
    status: RunStatus = Field(
        default=RunStatus.queued, sa_type=String(16), index=True, description="Where the run is"
    )
    trigger: RunTrigger = Field(sa_type=String(16), description="What started the run")
    source_url: str = Field(sa_type=Text, description="The upstream endpoint read")
    pages_fetched: int = Field(default=0, description="Upstream pages fetched")
    records_fetched: int = Field(default=0, description="Records the upstream sent")
    records_valid: int = Field(default=0, description="Records that passed validation")
    records_rejected: int = Field(default=0, description="Records kept as rejects instead")
    rows_inserted: int = Field(default=0, description="Crew members added")
    rows_updated: int = Field(default=0, description="Crew members changed")
    rows_unchanged: int = Field(default=0, description="Crew members sent unchanged (not written)")
    rows_deleted: int = Field(default=0, description="Crew members soft-deleted: no longer sent")
    rows_kept: int = Field(
        default=0,
        sa_column_kwargs={"server_default": "0"},
        description="Active members left as they were because only a rejected record named them",
    )
    rejects_not_stored: int = Field(
        default=0,
        sa_column_kwargs={"server_default": "0"},
        description="Rejected records beyond INGEST_MAX_REJECTS_PER_RUN: counted, not stored",
    )
    error: str | None = Field(
        default=None, sa_type=Text, description="Why it failed or was cancelled, else null"
    )
    dry_run: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": "false"},
        description="True when the run only reported what it would change",
    )
    schema_drift: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        description="Fields the upstream sent that the model does not know, and fields it omitted",
    )


# One ingest run. At most one run is queued or running at a time, enforced by the database.
class IngestRun(IngestRunBase, table=True):
    __tablename__ = "ingest_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{status}'" for status in RunStatus) + ")",
            name="ck_ingest_runs_status",
        ),
        Index(
            "ux_ingest_runs_one_active",
            text("(true)"),
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index(
            "ux_ingest_runs_schedule_slot",
            "schedule_slot",
            unique=True,
            postgresql_where=text("schedule_slot IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = timestamp(nullable=False, server_default=func.now())
    started_at: datetime | None = timestamp()
    finished_at: datetime | None = timestamp()
    allow_mass_delete: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    cancel_requested: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    # Random id of the process that owns the run; every change of its state is fenced on it.
    owner_id: int | None = Field(default=None, sa_type=BigInteger)
    # The owner's last sign of life; see app/ingest/watchdog.py.
    heartbeat_at: datetime | None = timestamp()
    # Interval number of a scheduled run: one run per interval across replicas.
    schedule_slot: int | None = Field(default=None, sa_type=BigInteger)
    # Number of the run's last event (app/event_models.py), set by the database's triggers.
    event_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


# What the API returns for a run.
class IngestRunPublic(IngestRunBase):
    model_config = ConfigDict(  # type: ignore[assignment]  # SQLModel's config is a ConfigDict
        **ALWAYS_SENT, json_schema_extra={"examples": [examples.INGEST_RUN]}
    )

    id: int = Field(description="Run id")
    created_at: datetime = Field(description="When the run was queued")
    started_at: datetime | None = Field(description="When it started; null while queued")
    finished_at: datetime | None = Field(description="When it ended; null until then")
    heartbeat_at: datetime | None = Field(
        default=None, description="The owning process's last sign of life while it ran"
    )
    schema_drift: SchemaDriftReport = Field(  # type: ignore[assignment]  # the column's shape
        default_factory=SchemaDriftReport,
        description="Fields the upstream sent that the model does not know, and fields it omitted",
    )


# A record the upstream sent that did not pass validation, kept as received.
class IngestReject(SQLModel, table=True):
    __tablename__ = "ingest_rejects"
    # A run's rejects in id order straight from the index (the first few, or a page of them).
    __table_args__ = (Index("ix_ingest_rejects_run_id_id", "run_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="ingest_runs.id", ondelete="CASCADE")
    record_id: str | None = Field(default=None, sa_type=Text)
    errors: list[dict[str, Any]] = Field(sa_column=Column(JSONB, nullable=False))
    raw: Any = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = timestamp(nullable=False, server_default=func.now())


# What the API returns for a reject.
class IngestRejectPublic(SQLModel):
    model_config = ConfigDict(  # type: ignore[assignment]  # SQLModel's config is a ConfigDict
        **ALWAYS_SENT, json_schema_extra={"examples": [examples.INGEST_REJECT]}
    )

    id: int = Field(description="Reject id")
    run_id: int = Field(description="The run that received the record")
    record_id: str | None = Field(description="The record's id, when it had a usable one")
    errors: list[RejectError] = Field(description="What failed, in the order pydantic found it")
    raw: Any = Field(description="The record exactly as the upstream sent it")
    created_at: datetime = Field(description="When it was rejected")


ItemT = TypeVar("ItemT")


# The list envelope shared by every collection endpoint.
class Page(BaseModel, Generic[ItemT]):
    model_config = ALWAYS_SENT

    items: list[ItemT] = PydanticField(description="This page, in the requested order")
    total: int = PydanticField(description="Matches on all pages", examples=[18])
    limit: int = PydanticField(description="Page size asked for", examples=[100])
    offset: int = PydanticField(description="Matches skipped before this page", examples=[0])
    total_exact: bool = PydanticField(
        default=True,
        description="False when `total` is an estimate (see `count` of `GET /crew`)",
    )


# A list envelope that can also be walked by keyset: `next` continues after the last item.
class CursorPage(Page[ItemT], Generic[ItemT]):
    next: str | None = PydanticField(
        default=None,
        description="Pass as `cursor=` with the same filters and sort; null on the last page",
    )
