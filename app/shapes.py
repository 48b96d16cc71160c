"""Fixed shapes the API serves inside free-form columns (a reject's errors, a run's schema
drift), and the configuration every response model shares. No tables and no database here."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler

# Response models: a field with a default is still always sent, so the OpenAPI document marks
# it required (a generated client then types it without `Unset`).
ALWAYS_SENT = ConfigDict(json_schema_serialization_defaults_required=True)


class NamedEnum(StrEnum):
    """A string enum whose member names reach the OpenAPI document (`x-enum-varnames`), so that
    generated clients name them (`NAME_DESC`, not `VALUE_1`)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> Any:
        schema = handler.resolve_ref_schema(handler(core))
        schema["x-enum-varnames"] = [member.name.upper() for member in cls]
        return schema


# One reason a record was rejected, as pydantic reported it (see app/ingest/validate.py).
class RejectError(BaseModel):
    model_config = ALWAYS_SENT

    type: str = Field(description="Error kind, e.g. `missing`, `enum`, `duplicate_id`")
    loc: list[str | int] = Field(description="Path to the offending field; empty for the record")
    msg: str = Field(description="What is wrong, in words")


# Fields the upstream sent that the model does not know, and known fields it left out.
class SchemaDriftReport(BaseModel):
    model_config = ALWAYS_SENT

    unknown_fields: dict[str, int] = Field(
        default={}, description="Unknown field name -> records that carried it"
    )
    missing_fields: dict[str, int] = Field(
        default={}, description="Known field name -> records that left it out"
    )

    def kinds(self) -> int:
        """How many kinds of drift the run saw: unknown fields, missing fields, or both."""
        return bool(self.unknown_fields) + bool(self.missing_fields)
