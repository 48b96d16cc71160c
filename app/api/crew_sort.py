"""The sort keys of `GET /crew`, as the named enum the OpenAPI document and clients see."""

from app.shapes import NamedEnum


class CrewSort(NamedEnum):
    """Sort key of `GET /crew`; a leading `-` sorts descending."""

    name = "name"
    name_desc = "-name"
    agency = "agency"
    agency_desc = "-agency"
    status = "status"
    status_desc = "-status"
    updated_at = "updated_at"
    updated_at_desc = "-updated_at"
