"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is configured."""

import warnings
from pathlib import Path


def start_embedded_postgres(data_dir: Path, cleanup_mode: str = "stop") -> str:
    """Start (or reuse) a pgserver instance whose data lives in `data_dir`; return its URL.

    With "stop" the server stops when the last process using it exits and the data stays;
    "delete" also removes `data_dir` (throw-away test servers).
    """
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data_dir, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
    return str(server.get_uri()).replace("postgresql://", "postgresql+psycopg2://", 1)
