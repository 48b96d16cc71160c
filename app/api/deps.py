import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlmodel import Session

from app.config import settings
from app.db import get_read_connection, get_session

SessionDep = Annotated[Session, Depends(get_session)]
ReadConnectionDep = Annotated[Connection, Depends(get_read_connection)]

bearer = HTTPBearer(auto_error=False, description="Required when INGEST_API_TOKEN is set.")


def require_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Guard write endpoints with INGEST_API_TOKEN, compared in constant time."""
    expected = settings.INGEST_API_TOKEN
    if expected is None:
        return
    supplied = credentials.credentials if credentials else ""
    if not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


WriteAccess = Depends(require_token)
