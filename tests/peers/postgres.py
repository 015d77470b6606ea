"""A real PostgreSQL server on 127.0.0.1 for the PostgreSQL store tests.

Debian's `postgresql` (installed by `scripts/test`). A throwaway cluster in a temp folder,
made with initdb and run with pg_ctl as the `postgres` user (both refuse to run as root),
trusting local connections, on a free port. The fixture `postgres` is one server for the
session with a fresh database per test (`new_database`, ~50 ms); `postgres_own` is a server
of the test's own, for tests that stop, crash or restart it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.peers.dovecot import free_port

START_TIMEOUT_S = 30


def bindir() -> Path | None:
    """The newest installed server's binaries (/usr/lib/postgresql/N/bin), if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    return Path(found[-1]).parent if found else None


def _as_owner(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the `postgres` user when root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class PostgresServer:
    """One cluster under `base`; the port and the data survive stop/start/restart."""

    def __init__(self, base: Path, bin_dir: Path) -> None:
        self.base = base
        self.bin = bin_dir
        self.port = free_port()
        self.data = base / "data"
        self.listen = "127.0.0.1"  # more addresses (comma-separated) take a restart

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            _as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]),
            check=check,
            capture_output=True,
            timeout=START_TIMEOUT_S + 30,
        )

    def init(self) -> None:
        """Make the cluster (once)."""
        self.base.chmod(0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses={self.listen}"
            " -c max_connections=200"
        )
        self._ctl(
            "-o", options, "-l", str(self.base / "log"), "-w", "-t", str(START_TIMEOUT_S), "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop: "fast" (clean), or "immediate" (a crash: recovery runs on the next start)."""
        self._ctl("-m", mode, "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port and data."""
        self.stop(mode)
        self.start()

    def trust_network(self, cidr: str) -> None:
        """Let clients from `cidr` in without a password (takes effect on the next start)."""
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {cidr} trust\n")

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for a database of this server."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database (named, or a fresh name); returns its DSN. An existing
        one of that name is kept."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)

    def logs(self, lines: int = 40) -> str:
        """The tail of the server log, for failure messages."""
        try:
            text = (self.base / "log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _require() -> Path:
    found = bindir()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "PostgreSQL is not installed (./scripts/test installs postgresql): "
                "in CI the PostgreSQL tests must run",
                pytrace=False,
            )
        pytest.skip("PostgreSQL not installed: run ./scripts/test as root")
    return found


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started throwaway cluster, removed afterwards."""
    bin_dir = _require()
    base = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    server = PostgresServer(base, bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skipped if not installed, except in CI)."""
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_own() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to stop, crash or restart."""
    with running_server() as server:
        yield server
