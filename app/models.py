"""Tables and API schemas: each SQLModel class is both the Pydantic model and the ORM table."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

# One id pattern everywhere: any case is accepted, ids are stored and served in lower case.
HEX24 = r"^[0-9a-fA-F]{24}$"
HTTP_URL = r"^https?://[^\s\x00]+$"
PRINTABLE = r"^[^\x00]*$"  # Postgres text cannot hold NUL
HAS_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"
HEX24_ANY_CASE = HEX24  # the name other modules import

LaunchId = Annotated[str, StringConstraints(pattern=HEX24_ANY_CASE), AfterValidator(str.lower)]


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


def _timestamp(**column_kwargs: Any) -> Any:
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
        primary_key=True, max_length=24, schema_extra={"pattern": HEX24}
    )
    # A null name is a reject (the upstream's schema allows it; a member needs a name here).
    name: Annotated[str, BeforeValidator(_strip)] = Field(
        min_length=1, max_length=200, schema_extra={"pattern": HAS_TEXT}
    )
    status: Annotated[CrewStatus, BeforeValidator(strip_lower)] = Field(sa_type=String(16))
    agency: Annotated[str | None, BeforeValidator(_strip_or_none)] = Field(
        default=None, max_length=100, schema_extra={"pattern": PRINTABLE}
    )
    image: str | None = Field(default=None, max_length=2048, schema_extra={"pattern": HTTP_URL})
    wikipedia: str | None = Field(default=None, max_length=2048, schema_extra={"pattern": HTTP_URL})
    launches: Annotated[
        list[LaunchId], BeforeValidator(_none_as_empty), AfterValidator(_unique_in_order)
    ] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(24)), nullable=False, server_default="{}"),
    )


CREW_FIELDS = tuple(CrewBase.model_fields)


# The table adds bookkeeping: first seen, last changed, soft deletion.
class Crew(CrewBase, table=True):
    __tablename__ = "crew"
    # One (sort key, id) index per sort of GET /crew, serving its filter too (migration 0006).
    __table_args__ = (
        Index("ix_crew_agency_key_id", func.coalesce(func.lower(text("agency")), ""), "id"),
        Index("ix_crew_name_id", "name", "id"),
        Index("ix_crew_status_id", "status", "id"),
        Index("ix_crew_updated_at_id", "updated_at", "id"),
        Index("ix_crew_launches", "launches", postgresql_using="gin"),
    )

    created_at: datetime | None = _timestamp(nullable=False, server_default=func.now())
    updated_at: datetime | None = _timestamp(nullable=False, server_default=func.now())
    deleted_at: datetime | None = _timestamp()


# What the API returns for a crew member.
class CrewPublic(CrewBase):
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


# Columns an ingest run and its public view share.
class IngestRunBase(SQLModel):
    status: RunStatus = Field(default=RunStatus.queued, sa_type=String(16), index=True)
    trigger: RunTrigger = Field(sa_type=String(16))
    source_url: str = Field(sa_type=Text)
    pages_fetched: int = 0
    records_fetched: int = 0
    records_valid: int = 0
    records_rejected: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    # Active rows left as they were because only a rejected record named their id.
    rows_kept: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # Rejected records beyond INGEST_MAX_REJECTS_PER_RUN: counted, not stored.
    rejects_not_stored: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    error: str | None = Field(default=None, sa_type=Text)
    dry_run: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    schema_drift: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
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
    created_at: datetime | None = _timestamp(nullable=False, server_default=func.now())
    started_at: datetime | None = _timestamp()
    finished_at: datetime | None = _timestamp()
    allow_mass_delete: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    cancel_requested: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    # Advisory-lock key of the process that owns the run; see app/ingest/ownership.py.
    owner_id: int | None = Field(default=None, sa_type=BigInteger)
    # Interval number of a scheduled run: one run per interval across replicas.
    schedule_slot: int | None = Field(default=None, sa_type=BigInteger)


# What the API returns for a run.
class IngestRunPublic(IngestRunBase):
    id: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


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
    created_at: datetime | None = _timestamp(nullable=False, server_default=func.now())


# What the API returns for a reject.
class IngestRejectPublic(SQLModel):
    id: int
    run_id: int
    record_id: str | None
    errors: list[dict[str, Any]]
    raw: Any
    created_at: datetime


ItemT = TypeVar("ItemT")


# The list envelope shared by every collection endpoint.
class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int
    limit: int
    offset: int
    total_exact: bool = True  # false when `total` is an estimate (very broad crew filters)


# A list envelope that can also be walked by keyset: `next` continues after the last item.
class CursorPage(Page[ItemT], Generic[ItemT]):
    next: str | None = None  # pass as `cursor=` with the same filters and sort; null at the end


class ChangeOp(StrEnum):
    insert = "insert"
    update = "update"
    delete = "delete"
    restore = "restore"


# One state of a crew member over an interval (SCD type 2): the row as a run left it, valid
# from `valid_from` until `valid_to` (null while current). No foreign keys: a run writes up to one
# version per member inside its load statement, and a per-row key check would double its cost.
class CrewVersion(SQLModel, table=True):
    __tablename__ = "crew_versions"
    __table_args__ = (
        Index("ix_crew_versions_opened_run", "opened_run_id", "crew_id"),
        Index(
            "ix_crew_versions_closed_valid_to",
            "valid_to",
            postgresql_where=text("valid_to IS NOT NULL"),
        ),
    )

    crew_id: str = Field(primary_key=True, max_length=24)
    valid_from: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    valid_to: datetime | None = _timestamp()
    opened_run_id: int | None = None
    closed_run_id: int | None = None
    op: ChangeOp = Field(sa_type=String(8))
    name: str = Field(max_length=200)
    status: str = Field(sa_type=String(16))
    agency: str | None = Field(default=None, max_length=100)
    image: str | None = Field(default=None, max_length=2048)
    wikipedia: str | None = Field(default=None, max_length=2048)
    launches: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(24)), nullable=False, server_default="{}"),
    )
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    deleted_at: datetime | None = _timestamp()


# What `GET /crew/{id}/history` returns for one version.
class CrewVersionPublic(CrewBase):
    model_config = ConfigDict(  # type: ignore[assignment]  # SQLModel's config is a ConfigDict
        json_schema_extra={
            "examples": [
                {
                    "id": "5ebf1a6e23a9a60006e03a7a",
                    "name": "Robert Behnken",
                    "status": "retired",
                    "agency": "NASA",
                    "image": "https://imgur.com/0smMgMH.png",
                    "wikipedia": "https://en.wikipedia.org/wiki/Robert_L._Behnken",
                    "launches": ["5eb87d46ffd86e000604b388"],
                    "created_at": "2026-11-20T08:00:00.120000Z",
                    "deleted_at": None,
                    "op": "update",
                    "run_id": 7,
                    "closed_by_run_id": None,
                    "valid_from": "2026-11-25T08:00:00.310000Z",
                    "valid_to": None,
                }
            ]
        }
    )

    created_at: datetime
    deleted_at: datetime | None
    op: ChangeOp
    run_id: int | None = Field(description="The run that opened this version (null: backfilled)")
    closed_by_run_id: int | None = Field(description="The run that closed it (null while current)")
    valid_from: datetime
    valid_to: datetime | None = Field(description="Null while this is the current version")


class FieldChange(BaseModel):
    before: Any
    after: Any


# One member a run inserted, updated, soft-deleted or restored, with the fields that differ.
class ChangePublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "crew_id": "5ebf1a6e23a9a60006e03a7a",
                    "op": "update",
                    "changed": {"status": {"before": "active", "after": "retired"}},
                },
                {
                    "crew_id": "5fe3c587b3467846b3242198",
                    "op": "insert",
                    "changed": {
                        "id": {"before": None, "after": "5fe3c587b3467846b3242198"},
                        "name": {"before": None, "after": "Matthias Maurer"},
                        "status": {"before": None, "after": "active"},
                        "agency": {"before": None, "after": "ESA"},
                        "image": {"before": None, "after": "https://imgur.com/RCa4IfE.png"},
                        "wikipedia": {
                            "before": None,
                            "after": "https://en.wikipedia.org/wiki/Matthias_Maurer",
                        },
                        "launches": {"before": None, "after": ["5fe3af58b3467846b324215f"]},
                    },
                },
            ]
        }
    )

    crew_id: str
    op: ChangeOp
    changed: dict[str, FieldChange]


# A dry run's change list, kept because its load was rolled back (a real run's list is derived
# from the versions it committed).
class IngestChange(SQLModel, table=True):
    __tablename__ = "ingest_changes"

    run_id: int = Field(foreign_key="ingest_runs.id", ondelete="CASCADE", primary_key=True)
    crew_id: str = Field(primary_key=True, max_length=24)
    op: ChangeOp = Field(sa_type=String(8))
    changed: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
