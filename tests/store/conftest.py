"""Store tests run against SQLite and against a real, throwaway PostgreSQL server.

The server is started once per session from the Debian packages' binaries
(/usr/lib/postgresql/*/bin): initdb into a temp dir, pg_ctl on a free port of 127.0.0.1, no
fsync. Every test gets a database of its own on it; all of it is deleted at the end. As root
the server runs as the `postgres` OS user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SETUP_HINT = "run `scripts/host-setup.sh packages` (as root) to install PostgreSQL"


def _pg_bin() -> Path:
    """The bin directory of the newest PostgreSQL installed, or fail the session saying how to get one."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    found = [d for d in found if (d / "initdb").exists() and (d / "postgres").exists()]
    if not found:
        pytest.fail(f"the store tests need PostgreSQL (no /usr/lib/postgresql/*/bin/pg_ctl): {SETUP_HINT}",
                    pytrace=False)

    def version(d: Path):
        name = d.parent.name
        return (int(name), name) if name.isdigit() else (0, name)

    return max(found, key=version)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One initdb'd cluster in a temp dir, run by pg_ctl; `url(db)` is a SQLAlchemy URL for a database on it."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="dlbox-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port: int | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root: hand the cluster to the postgres user
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError:
                self.remove()
                pytest.fail(f"running as root, PostgreSQL needs the `postgres` OS user: {SETUP_HINT}",
                            pytrace=False)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # cwd: the postgres user may not be able to enter the caller's directory (/root, say)
        result = subprocess.run([*self.as_user, *args], cwd=self.root, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}\n"
                               f"server log:\n{log}")
        return result

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            # a throwaway server: durability buys nothing, speed does
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\n")
        for attempt in range(5):  # the free port may be taken between picking and binding it
            self.port = _free_port()
            try:
                self._run(str(self.bin / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                          "-l", str(self.log), "-o", f"-p {self.port}")
                return
            except RuntimeError:
                if attempt == 4 or "could not bind" not in (self.log.read_text() if self.log.exists() else ""):
                    raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            # PostgreSQL 15 copies the template through the WAL by default: 0.4 s a database, against 0.04 s
            # for a plain file copy (which, without fsync, skips nothing that matters here)
            strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}"{strategy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate",
                            "-w"], cwd=self.root, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for this session, on 127.0.0.1; stopped and deleted at the end."""
    server = PostgresServer(_pg_bin())
    started = time.monotonic()
    try:
        server.start()
    except Exception as exc:
        server.stop()
        server.remove()
        pytest.fail(f"could not start a throwaway PostgreSQL server: {exc}", pytrace=False)
    server.startup_s = time.monotonic() - started
    try:
        yield server
    finally:
        server.stop()
        server.remove()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://) for a database created on the session's server."""
    return postgres_server.create_database("dlbox")


@pytest.fixture
def fresh_postgres_url(postgres_server):
    """A SQLAlchemy URL for an empty database of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty database: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dlbox.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def make_store(db_url):
    """Opens Stores on the test's database (migrating it) and closes their connections at the end."""
    from dlbox.store.db import Store

    opened = []

    def make(url: str | None = None) -> Store:
        store = Store(url or db_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.engine.dispose()


@pytest.fixture
def store(make_store):
    return make_store()
