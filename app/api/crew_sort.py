"""The sort keys of `GET /crew`, as the named enum the OpenAPI document and clients see."""

from enum import StrEnum
from typing import Any

from pydantic import GetJsonSchemaHandler


class CrewSort(StrEnum):
    """Sort key of `GET /crew`; a leading `-` sorts descending."""

    name = "name"
    name_desc = "-name"
    agency = "agency"
    agency_desc = "-agency"
    status = "status"
    status_desc = "-status"
    updated_at = "updated_at"
    updated_at_desc = "-updated_at"

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> Any:
        """Member names for generated clients (`NAME_DESC`, not `VALUE_1`)."""
        schema = handler.resolve_ref_schema(handler(core))
        schema["x-enum-varnames"] = [member.name.upper() for member in cls]
        return schema
