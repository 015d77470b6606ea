"""A real Dovecot IMAP server on 127.0.0.1 for the IMAP intake tests.

Debian's `dovecot-imapd` (installed by `scripts/test`). One server per test (fixture `dovecot`;
it starts in well under a second): its configuration, runtime and mail live in a short temp
folder under /tmp with mode 755 — every parent must be traversable by the mail user, or LOGIN
fails with "Temporary authentication failure". It listens in plain text on `port` and with
implicit TLS on `tls_port` (a self-signed certificate made at start, in `cert`), and offers
STARTTLS on the plain port. Mail is delivered the way an MTA does (`dovecot-lda`), or in bulk
by IMAP APPEND from a second client.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import pytest

HERE = Path(__file__).resolve().parent
DOVECOT = Path("/usr/sbin/dovecot")
LDA = Path("/usr/lib/dovecot/dovecot-lda")
MAIL_UID = 65534  # mail owned by root (uid 0) is refused by Dovecot
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def installed() -> bool:
    """Whether the Dovecot server and its delivery agent are installed."""
    return DOVECOT.exists() and LDA.exists() and shutil.which("doveadm") is not None


def _greeting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


class Dovecot:
    """One Dovecot master process (and its children) with everything under `base`.

    The ports, users and mail survive `restart()`, so a test can stop the server under a client
    and bring it back with the same mailbox.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.tls_port = free_port()
        self.passwords: dict[str, str] = {}
        # An explicit CAPABILITY list (Dovecot's `imap_capability`), to play an older server.
        self.capabilities: list[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def config(self) -> Path:
        """The server's configuration file (for doveadm and dovecot-lda)."""
        return self.base / "dovecot.conf"

    @property
    def cert(self) -> Path:
        """The self-signed certificate of the TLS listeners (a CA file for clients)."""
        return self.base / "cert.pem"

    def _prepare(self) -> None:
        self.base.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir(exist_ok=True)
        if not self.cert.exists():
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout",
                    str(self.base / "key.pem"),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        text = (HERE / "dovecot.conf.tmpl").read_text()
        for key, value in (
            ("{DIR}", str(self.base)),
            ("{PORT}", str(self.port)),
            ("{TLS_PORT}", str(self.tls_port)),
        ):
            text = text.replace(key, value)
        if self.capabilities is not None:
            text += f"imap_capability = {' '.join(self.capabilities)}\n"
        self.config.write_text(text)
        self._write_users()

    def _write_users(self) -> None:
        lines = [f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.passwords.items()]
        (self.base / "users").write_text("".join(lines))

    def add_user(self, user: str, password: str) -> None:
        """A mail user (read by the server on each login, so this works while it runs)."""
        self.passwords[user] = password
        home = self.base / "mail" / user
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, MAIL_UID, MAIL_UID)
        if self.base.exists():
            self._write_users()

    def start(self) -> None:
        """Start the server and wait for its greeting on both ports."""
        if self._proc is not None:
            return
        self._prepare()
        self._out = (self.base / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", self.config],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _greeting(self.port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"Dovecot exited with {code}\n{self.logs()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Dovecot not ready after {START_TIMEOUT_S}s\n{self.logs()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM the whole process group: stopping only the master would leave a logged-in
        imap process serving its client."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Children (imap, auth) may outlive the master by a moment: wait for the group.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)
        if self._out is not None:
            self._out.close()
            self._out = None

    def capability(self, user: str = "gw") -> list[str]:
        """The CAPABILITY list a logged-in client sees (blocking: call it in a thread)."""
        client = self._imap(user)
        try:
            typ, data = client.capability()
            assert typ == "OK", typ
            return data[0].decode().split()
        finally:
            client.logout()

    def without_capabilities(self, *names: str) -> None:
        """Restart as a server that does not offer `names` (e.g. IDLE, MOVE): Dovecot is told
        the whole list explicitly, its own defaults less these."""
        offered = self.capability()
        self.capabilities = [c for c in offered if c.upper() not in {n.upper() for n in names}]
        self.restart()

    def restart(self) -> None:
        """Stop and start again on the same ports and mail."""
        self.stop()
        self.start()

    def logs(self, lines: int = 40) -> str:
        """The tail of the server's log, for failure messages."""
        try:
            text = (self.base / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_count(self, pattern: str) -> int:
        """How many lines of the server's log match a regular expression."""
        try:
            text = (self.base / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return len(re.findall(pattern, text))

    # -- mail ---------------------------------------------------------------------------------

    def deliver(
        self, user: str, raw: bytes, sender: str = "alice@tenant.example", folder: str = "INBOX"
    ) -> None:
        """Deliver one message the way an MTA does (dovecot-lda; IDLE clients are told)."""
        subprocess.run(
            [LDA, "-c", self.config, "-d", user, "-f", sender, "-m", folder],
            input=raw,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=60)
        client.login(user, self.passwords[user])
        return client

    def append_many(
        self, user: str, messages: Iterable[bytes], folder: str = "INBOX", flags: str = ""
    ) -> int:
        """Append messages over one IMAP session (blocking: call it in a thread)."""
        count = 0
        client = self._imap(user)
        try:
            for raw in messages:
                typ, _ = client.append(folder, flags, None, raw)
                assert typ == "OK", typ
                count += 1
        finally:
            client.logout()
        return count

    def uids(self, user: str, criteria: str = "ALL", folder: str = "INBOX") -> list[int]:
        """UIDs of the messages in a folder matching IMAP SEARCH criteria (e.g. UNSEEN)."""
        client = self._imap(user)
        try:
            typ, _ = client.select(folder)
            assert typ == "OK", typ
            typ, data = client.uid("SEARCH", criteria)
            assert typ == "OK", typ
            return [int(x) for x in (data[0] or b"").split()]
        finally:
            client.logout()

    def doveadm(self, *args: str) -> str:
        """Run doveadm against this server's configuration; returns its output."""
        done = subprocess.run(
            ["doveadm", "-c", str(self.config), *args], check=True, capture_output=True, timeout=60
        )
        return done.stdout.decode(errors="replace")

    def set_uidvalidity(self, user: str, value: int, folder: str = "INBOX") -> None:
        """Give a folder a new UIDVALIDITY, as a server rebuild or migration would."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def create_folder(self, user: str, folder: str) -> None:
        """Create a mail folder."""
        self.doveadm("mailbox", "create", "-u", user, folder)


class CuttingProxy:
    """A TCP relay in front of the server that can drop the connection in the middle of the
    answer to a `UID FETCH … BODY.PEEK[]` (once, after forwarding part of it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_next_fetch = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The relay's port on 127.0.0.1."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        armed = asyncio.Event()

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if self.cut_next_fetch and b"FETCH" in data and b"BODY.PEEK[]" in data:
                    armed.set()
                up_writer.write(data)

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                if armed.is_set() and len(data) > 1000:
                    writer.write(data[: len(data) // 2])
                    await writer.drain()
                    self.cut_next_fetch = False
                    self.cuts += 1
                    return
                writer.write(data)

        tasks = [
            asyncio.ensure_future(client_to_server()),
            asyncio.ensure_future(server_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except (ConnectionError, OSError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with user `gw` (skipped if not installed, except in CI)."""
    if not installed():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "Dovecot is not installed (./scripts/test installs dovecot-imapd): "
                "in CI the IMAP tests must run",
                pytrace=False,
            )
        pytest.skip("Dovecot not installed: run ./scripts/test as root")
    base = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
    server = Dovecot(base)
    server.add_user("gw", "gw-secret")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
