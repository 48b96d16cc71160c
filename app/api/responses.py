"""What operations answer besides their 200 body, declared for the OpenAPI document: the 503 of
a database that is away, 401/404 bodies, 304 and the typed headers. Declarations only: the
routes, `app/api/conditional.py` and the app's error handlers send what is declared here."""

from typing import Any

from pydantic import BaseModel, Field

RETRY_AFTER_SECONDS = 5


class Problem(BaseModel):
    detail: str = Field(description="What went wrong, in words")


# The answer of every database-backed operation while the database is down or too slow.
class DatabaseUnavailable(BaseModel):
    detail: str = Field(description="What went wrong, in words")
    cause: str = Field(description="The driver's error type, e.g. `OperationalError`")


def header(description: str, required: bool, **schema: Any) -> dict[str, Any]:
    """A response header's declaration; `required` means every such response carries it."""
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


RETRY_AFTER = header("Seconds to wait before trying again", True, type="integer", minimum=0)
LOCATION = header("The run's URL, `/ingest/{run_id}`", True)
VARY = header("`Accept`: the representation depends on it", True)
CACHE_CONTROL = header("`no-cache`: revalidate before reuse", True)
LINK_NEXT = header(
    'RFC 8288 link to the next page, `<...>; rel="next"`; absent on the last page', False
)
VARY_PREFER = header("`Prefer`: `total` depends on its `count` preference", True)
PREFERENCE_APPLIED = header(
    "`count=...` when the request's `Prefer` header chose how `total` was computed", False
)
# What a GET /crew page carries besides its validators.
LIST_HEADERS = {"Link": LINK_NEXT, "Vary": VARY_PREFER, "Preference-Applied": PREFERENCE_APPLIED}
VALIDATORS = {
    "ETag": header("Strong validator; send it back in If-None-Match", True),
    "Last-Modified": header(
        "When the data covered last changed (HTTP date); absent before the first load", False
    ),
    "Cache-Control": CACHE_CONTROL,
}

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {
        "description": "Not modified since the validators sent (If-None-Match, If-Modified-Since)",
        "headers": VALIDATORS,
    }
}
DATABASE_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "model": DatabaseUnavailable,
        "description": "The database is unavailable or too slow right now: retry after "
        "`Retry-After` seconds",
        "headers": {"Retry-After": RETRY_AFTER},
    }
}
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "Missing or wrong bearer token (only when INGEST_API_TOKEN is set)",
        "headers": {"WWW-Authenticate": header("`Bearer`", True)},
    }
}


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    return {404: {"model": Problem, "description": f"No {what} with this id"}}


def conditional_get(
    missing: str | None = None, **headers: dict[str, Any]
) -> dict[int | str, dict[str, Any]]:
    """A conditional read: 200 with the validators (and `headers`), 304, 503, and a 404 when
    the `missing` thing can be unknown."""
    ok: dict[int | str, dict[str, Any]] = {200: {"headers": {**VALIDATORS, **headers}}}
    return {**ok, **NOT_MODIFIED, **(not_found(missing) if missing else {}), **DATABASE_DOWN}
