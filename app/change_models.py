"""What runs changed: each member's versions (SCD type 2) and a dry run's change list, as tables
and API schemas (the SQLModel classes double as both, as in app/models.py)."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import Column, DateTime, Index, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from app.models import CrewBase, timestamp
from app.shapes import ALWAYS_SENT


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
    valid_to: datetime | None = timestamp()
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
    deleted_at: datetime | None = timestamp()


# What `GET /crew/{id}/history` returns for one version.
class CrewVersionPublic(CrewBase):
    model_config = ConfigDict(  # type: ignore[assignment]  # SQLModel's config is a ConfigDict
        **ALWAYS_SENT,
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
        },
    )

    created_at: datetime = Field(description="When a run first loaded the member")
    deleted_at: datetime | None = Field(description="Set when this version is a soft deletion")
    op: ChangeOp = Field(description="The change that opened this version")
    run_id: int | None = Field(description="The run that opened this version (null: backfilled)")
    closed_by_run_id: int | None = Field(description="The run that closed it (null while current)")
    valid_from: datetime = Field(description="When this version became current")
    valid_to: datetime | None = Field(description="Null while this is the current version")


class FieldChange(BaseModel):
    before: Any = PydanticField(description="The value before the run; null for an insert")
    after: Any = PydanticField(description="The value after the run; null for a delete")


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

    crew_id: str = PydanticField(description="The member changed")
    op: ChangeOp = PydanticField(description="What the run did to it")
    changed: dict[str, FieldChange] = PydanticField(description="Each field that differs")


# A dry run's change list, kept because its load was rolled back (a real run's list is derived
# from the versions it committed).
class IngestChange(SQLModel, table=True):
    __tablename__ = "ingest_changes"

    run_id: int = Field(foreign_key="ingest_runs.id", ondelete="CASCADE", primary_key=True)
    crew_id: str = Field(primary_key=True, max_length=24)
    op: ChangeOp = Field(sa_type=String(8))
    changed: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
