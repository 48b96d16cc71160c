"""Validation of upstream records: pure functions over one page, no I/O."""

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from sqlmodel import SQLModel

from app.models import CREW_FIELDS, HEX24, CrewBase, strip_lower


def compiled_twin(model: type[SQLModel]) -> type[BaseModel]:
    """A plain pydantic model with `model`'s fields, constraints and (Annotated) validators.

    SQLModel builds each instance through a Python `__init__`; a plain model is built entirely in
    pydantic's compiled core, which halves validation time (5.2 vs 9.7 ms per 1,000 records).
    The SQLModel class stays the one definition of the rules.
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        twin = copy.copy(info)
        twin.metadata = [m for m in info.metadata if type(m).__name__ != "FieldInfoMetadata"]
        fields[name] = (info.annotation, twin)
    config = ConfigDict(extra="ignore", from_attributes=True)
    return create_model(f"{model.__name__}Record", __config__=config, **fields)


CrewRecord = compiled_twin(CrewBase)
PAGE_ADAPTER = TypeAdapter(list[CrewRecord])  # type: ignore[valid-type]
RECORD_ADAPTER = TypeAdapter(CrewRecord)
KNOWN_FIELDS = frozenset(CREW_FIELDS)
CREW_ID = re.compile(HEX24)
MAX_ERRORS = 20  # per reject; a record with thousands of bad list items keeps the first ones
MAX_DRIFT_FIELDS = 100  # per kind of drift, the most frequent; names cut to MAX_FIELD_NAME
MAX_FIELD_NAME = 100


@dataclass(frozen=True)
class Reject:
    record_id: str | None
    errors: list[dict[str, Any]]
    raw: Any


@dataclass
class ValidatedPage:
    crew: list[Any]  # CrewRecord instances
    rejects: list[Reject]


@dataclass
class SchemaDrift:
    """Fields the upstream sent that the model does not know, and known fields it left out."""

    unknown_fields: Counter[str] = field(default_factory=Counter)
    missing_fields: Counter[str] = field(default_factory=Counter)

    def observe(self, records: list[Any]) -> None:
        for record in records:
            if isinstance(record, dict):
                keys = record.keys()
                if keys == KNOWN_FIELDS:  # the common case, compared in C
                    continue
                self.unknown_fields.update(keys - KNOWN_FIELDS)
                self.missing_fields.update(KNOWN_FIELDS - keys)

    def add(self, other: "SchemaDrift") -> None:
        self.unknown_fields.update(other.unknown_fields)
        self.missing_fields.update(other.missing_fields)

    def as_json(self) -> dict[str, dict[str, int]]:
        """The most frequent fields of each kind, by name; an upstream can send any keys."""
        drift = {"unknown_fields": self.unknown_fields, "missing_fields": self.missing_fields}
        return {
            name: {
                key[:MAX_FIELD_NAME]: count
                for key, count in sorted(counts.most_common(MAX_DRIFT_FIELDS))
            }
            for name, counts in drift.items()
            if counts
        }


@dataclass(frozen=True)
class CheckedPage:
    """A page made ready to load: its records as sent, the valid ones as one JSON array (the
    validated objects themselves are dropped), its rejects, and the drift it shows.

    `rejects` holds the first `keep_rejects` of them only (each carries up to MAX_ERRORS + 1
    error dicts); `rejected` counts them all and `kept_ids` names the rows all of them keep.
    """

    records: list[Any]
    crew_json: str
    valid: int
    rejects: list[Reject]
    rejected: int
    kept_ids: list[str]
    drift: SchemaDrift
    # (name, agency, status) of each valid record: a first load's name bounds (app/ingest/bulk.py)
    bounded: list[tuple[str, str | None, str]]


def check_page(records: list[Any], keep_rejects: int) -> CheckedPage:
    """All the Python work a page needs before its load, so that it can run while the load of
    the page before waits on the database."""
    drift = SchemaDrift()
    drift.observe(records)
    checked = validate_page(records)
    crew_json = PAGE_ADAPTER.dump_json(checked.crew).decode()
    rejects = checked.rejects
    kept_ids = known_ids(rejects)
    bounded = [(member.name, member.agency, member.status) for member in checked.crew]
    return CheckedPage(
        records,
        crew_json,
        len(checked.crew),
        rejects[:keep_rejects],
        len(rejects),
        kept_ids,
        drift,
        bounded,
    )


def validate_page(records: list[Any]) -> ValidatedPage:
    """Validate a page in one compiled call; only a page with errors is revisited per record."""
    try:
        crew = PAGE_ADAPTER.validate_python(records)
    except ValidationError:
        crew, rejects = validate_one_by_one(records)
    else:
        rejects = []
    return drop_repeated_ids(crew, records, rejects)


def validate_one_by_one(records: list[Any]) -> tuple[list[Any], list[Reject]]:
    crew: list[Any] = []
    rejects: list[Reject] = []
    for record in records:
        try:
            crew.append(RECORD_ADAPTER.validate_python(record))
        except ValidationError as exc:
            rejects.append(Reject(record_id_of(record), error_list(exc), record))
    return crew, rejects


def drop_repeated_ids(crew: list[Any], records: list[Any], rejects: list[Reject]) -> ValidatedPage:
    """Keep the first record of each id; later ones become rejects."""
    seen: set[str] = set()
    unique: list[Any] = []
    repeated: list[str] = []
    for member in crew:
        if member.id in seen:
            repeated.append(member.id)
        else:
            seen.add(member.id)
            unique.append(member)
    return ValidatedPage(unique, rejects + repeated_id_rejects(repeated, records))


def repeated_id_rejects(repeated_ids: list[str], records: list[Any]) -> list[Reject]:
    """Rejects for ids seen earlier in the run, each with the (last) record of that id."""
    if not repeated_ids:
        return []
    raw_by_id = {record_id_of(record): record for record in records}
    return [duplicate_reject(record_id, raw_by_id.get(record_id)) for record_id in repeated_ids]


def duplicate_reject(record_id: str, raw: Any) -> Reject:
    error = {"type": "duplicate_id", "loc": ["id"], "msg": "id already seen in this run"}
    return Reject(record_id, [error], raw)


def known_ids(rejects: list[Reject]) -> list[str]:
    """Well-formed ids of records that failed validation: rows whose last good state stays."""
    return [
        reject.record_id
        for reject in rejects
        if reject.record_id and CREW_ID.fullmatch(reject.record_id)
        if reject.errors[0]["type"] != "duplicate_id"
    ]


def record_id_of(record: Any) -> str | None:
    record_id = strip_lower(record.get("id")) if isinstance(record, dict) else None
    return record_id if isinstance(record_id, str) else None


def error_list(exc: ValidationError) -> list[dict[str, Any]]:
    """Errors as JSON-safe dicts; the offending input is kept once, in the reject's `raw`."""
    errors = exc.errors(include_url=False, include_input=False)
    kept: list[dict[str, Any]] = [
        {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}
        for error in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        kept.append({"type": "more_errors", "loc": [], "msg": f"{more} more errors not kept"})
    return kept
