from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.db import get_engine, schema_is_current

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(description="`ok`, or `unavailable` with the failing checks")
    checks: dict[str, bool] = Field(
        default={}, description="Readiness checks: database, migrations, recovery"
    )


@router.get("/healthz", summary="Liveness", response_description="The process is up")
def read_health() -> Health:
    """The process is up and serving requests."""
    return Health(status="ok")


def readiness_checks(app: FastAPI) -> dict[str, bool]:
    """Database reachable, migrations at head and start-up recovery done (also on the page)."""
    checks = {"database": False, "migrations": False, "recovery": False}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = True
        checks["migrations"] = schema_is_current()
    except Exception:  # a down database is an answer here, not an error
        pass
    checks["recovery"] = bool(getattr(app.state, "recovered", False))
    return checks


@router.get(
    "/readyz",
    summary="Readiness",
    response_description="Ready: every check passed",
    responses={503: {"model": Health, "description": "Not ready; `checks` says what is missing"}},
)
def read_readiness(request: Request) -> Health:
    """Database reachable, migrations at head and start-up recovery done."""
    checks = readiness_checks(request.app)
    health = Health(status="ok" if all(checks.values()) else "unavailable", checks=checks)
    if health.status != "ok":
        return JSONResponse(health.model_dump(), status_code=503)  # type: ignore[return-value]
    return health
