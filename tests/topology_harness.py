"""A production-like database topology of a test's own, on 127.0.0.1 at free ports: a
PostgreSQL 15 primary, a streaming standby made by pg_basebackup (hot standby, promotable) and
Debian's PgBouncer in transaction mode in front of the primary. Every process runs as the
`postgres` system user and is stopped by the harness; the shared server on 5432 is never used.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg2

from tests.fake_upstream import free_port
from tests.pg_harness import wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBOUNCER = Path("/usr/sbin/pgbouncer")
SYSTEM_USER = "postgres"
DATABASE = "crew_etl"
T = TypeVar("T", "Cluster", "PgBouncer")


def available() -> str | None:
    """Why the topology cannot be built here, or None."""
    if not (PG_BIN / "pg_basebackup").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN}"
    if not PGBOUNCER.exists():
        return "pgbouncer is not installed (apt-get install pgbouncer)"
    if os.geteuid() != 0:
        return "the topology runs its servers as the postgres user: needs root"
    return None


def as_postgres(path: Path) -> Path:
    if not path.exists():
        path.touch()
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def run(*command: str | Path) -> None:
    subprocess.run(
        [str(part) for part in command],
        check=True,
        user=SYSTEM_USER,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


class Cluster:
    """One PostgreSQL 15 server: a primary (initdb) or a standby of one (pg_basebackup -R)."""

    def __init__(self, root: Path, name: str, standby_of: "Cluster | None" = None) -> None:
        self.root, self.port = root, free_port()
        self.data = root / name
        if standby_of is None:
            run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "utf8")
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host replication postgres 127.0.0.1/32 trust\n")
        else:
            run(
                PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(standby_of.port),
                "-U", "postgres", "-D", self.data, "-R", "-X", "stream", "--checkpoint=fast",
            )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c wal_level=replica "
            "-c max_wal_senders=5 -c hot_standby=on -c wal_receiver_status_interval=1"
        )
        log = self.root / f"{self.data.name}.log"
        run(PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def promote(self) -> None:
        run(PG_BIN / "pg_ctl", "-D", self.data, "-w", "promote")

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def cursor(self, database: str = DATABASE) -> Iterator[psycopg2.extensions.cursor]:
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5
        )
        connection.autocommit = True
        try:
            yield connection.cursor()
        finally:
            connection.close()

    def one(self, sql: str, *params: object) -> tuple[object, ...]:
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            return tuple(cursor.fetchone() or ())

    def set_read_only(self, read_only: bool) -> None:
        """What a failover to a hot standby looks like to clients: every new transaction, of
        every session, is read-only (ALTER SYSTEM and a reload: no session is spared)."""
        value = "on" if read_only else "off"
        with self.cursor("postgres") as cursor:
            cursor.execute("SET default_transaction_read_only = off")
            cursor.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
            cursor.execute("SELECT pg_reload_conf()")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped


class PgBouncer:
    """Debian's PgBouncer, transaction pooling, in front of `target`; `repoint` + RELOAD moves
    it to another server without a restart, as an operator does after a failover."""

    def __init__(self, root: Path, target: Cluster) -> None:
        self.root, self.port = root, free_port()
        self.ini = as_postgres(root / "pgbouncer.ini")
        users = as_postgres(root / "userlist.txt")
        users.write_text('"postgres" ""\n')
        self.write_config(target)
        self.process = subprocess.Popen(
            [str(PGBOUNCER), str(self.ini)],
            user=SYSTEM_USER,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, timeout=30)

    def write_config(self, target: Cluster) -> None:
        self.ini.write_text(
            f"""[databases]
{DATABASE} = host=127.0.0.1 port={target.port} dbname={DATABASE}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root / "userlist.txt"}
admin_users = postgres
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_login_retry = 1
server_connect_timeout = 2
query_wait_timeout = 5
logfile = {self.root / "pgbouncer.log"}
"""
        )

    def answers(self) -> bool:
        self.admin("SHOW VERSION")
        return True

    def admin(self, command: str) -> None:
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer", connect_timeout=5
        )
        connection.autocommit = True
        try:
            connection.cursor().execute(command)
        finally:
            connection.close()

    def repoint(self, target: Cluster) -> None:
        self.write_config(target)
        self.admin("RELOAD")

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Topology:
    """Primary, standby and PgBouncer, made once per test module."""

    def __init__(self) -> None:
        self.root = as_postgres(Path(tempfile.mkdtemp(prefix="crew-etl-topology-")))
        os.chmod(self.root, 0o755)
        self._started: list[Cluster | PgBouncer] = []
        try:
            self.primary = self._start(Cluster(self.root, "primary"))
            with self.primary.cursor("postgres") as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
            self.standby = self._start(Cluster(self.root, "standby", standby_of=self.primary))
            self.bouncer = self._start(PgBouncer(self.root, self.primary))
        except BaseException:  # never leave servers running behind a failed start
            self.destroy()
            raise

    def _start(self, part: T) -> T:
        self._started.append(part)
        return part

    def destroy(self) -> None:
        for part in reversed(self._started):
            if isinstance(part, PgBouncer):
                part.stop()
            else:
                part.destroy()
        shutil.rmtree(self.root, ignore_errors=True)
