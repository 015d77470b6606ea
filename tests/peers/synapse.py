"""A real Synapse homeserver on 127.0.0.1 for the Matrix tests.

Synapse lives in its own virtualenv (`$SYNAPSE_VENV`, default `<repo>/.venv-synapse`, installed
by `scripts/test`), never in the project's: it is a test peer, not a dependency. One server runs
per test session (fixture `synapse`); tests make fresh users and rooms with the helpers below,
which speak the plain client-server API so a test can act as an engineer without nio.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# Loopback only: never route the harness's requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@functools.cache
def synapse_python() -> Path | None:
    """The python of the Synapse virtualenv if Synapse imports there, else None."""
    venv = Path(os.environ.get("SYNAPSE_VENV") or REPO / ".venv-synapse")
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [python, "-c", "import synapse"], capture_output=True, timeout=60, check=False
    )
    return python if probe.returncode == 0 else None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(none)"


class SynapseError(AssertionError):
    """The homeserver answered a harness request with an HTTP error."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body}")
        self.status = status
        try:
            self.errcode: str | None = json.loads(body).get("errcode")
        except (ValueError, AttributeError):
            self.errcode = None


class Synapse:
    """One Synapse process with its config, SQLite database and logs in `base`.

    The port and database survive `restart()`, so tests can stop the server under a client and
    bring it back with the same users, rooms, tokens and transaction ids.
    """

    server_name = "localhost"
    Error = SynapseError

    def __init__(self, base: Path, python: Path, port: int | None = None) -> None:
        self.base = base
        self.python = python
        self.port = port or free_port()
        self.secret = secrets.token_hex(16)
        self.passwords: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The homeserver URL for clients, e.g. `http://127.0.0.1:8008`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's PID (also its process group), or None when stopped."""
        return self._proc.pid if self._proc else None

    def _write_config(self) -> Path:
        values = {
            "{DIR}": str(self.base),
            "{PORT}": str(self.port),
            "{SECRET}": self.secret,
            "{DB}": str(self.base / "homeserver.db"),
        }
        for template, target in (
            ("homeserver.yaml.tmpl", "homeserver.yaml"),
            ("log.config", "log.config"),
        ):
            text = (HERE / template).read_text()
            for key, value in values.items():
                text = text.replace(key, value)
            (self.base / target).write_text(text)
        return self.base / "homeserver.yaml"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server (the signing key is made on first start) and wait until it answers."""
        if self._proc is not None:
            return
        if _listening(self.port):  # its answers would pass for ours
            raise RuntimeError(f"port {self.port} is already in use on 127.0.0.1")
        self.base.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        (self.base / "homeserver.pid").unlink(missing_ok=True)  # left behind by a SIGKILL
        self._out = (self.base / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "-c", config],
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"Synapse exited with {code} while starting\n{self.logs()}")
            try:
                with _OPENER.open(f"{self.url}/_matrix/client/versions", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Synapse not ready after {timeout:.0f}s\n{self.logs()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL it if it is still there after 10 s."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self) -> None:
        """Stop and start again on the same port and database."""
        self.stop()
        self.start()

    def logs(self, lines: int = 40) -> str:
        """The tail of the server's stdout/stderr and of its log file, for failure messages."""
        return (
            f"--- stdout/stderr ---\n{_tail(self.base / 'stdout.log', lines)}\n"
            f"--- homeserver.log ---\n{_tail(self.base / 'homeserver.log', lines)}"
        )

    # -- HTTP -------------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """One JSON request to the server; raises SynapseError on an HTTP error status."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(request, timeout=timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            with exc:
                raise SynapseError(
                    exc.code, method, path, exc.read().decode(errors="replace")
                ) from None

    # -- users ------------------------------------------------------------------------------

    def register(
        self, localpart: str, password: str | None = None, admin: bool = False, unique: bool = True
    ) -> tuple[str, str, str]:
        """Create a user with the shared-secret admin API: `(user_id, access_token, device_id)`.

        The localpart gets a random suffix unless `unique=False`, so every test can make fresh
        users. The password (random if not given) is kept in `passwords` for `login()`.
        """
        if unique:
            localpart = f"{localpart}-{uuid.uuid4().hex[:8]}"
        password = password or secrets.token_hex(12)
        nonce = self.api("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode() + b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        reply = self.api(
            "POST",
            "/_synapse/admin/v1/register",
            body={
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        self.passwords[reply["user_id"]] = password
        return reply["user_id"], reply["access_token"], reply["device_id"]

    def login(
        self, user_id: str, password: str | None = None, device_id: str | None = None
    ) -> tuple[str, str, str]:
        """Log in with a password (default: the one `register` used): `(user_id, token, device)`.

        Passing the `device_id` of an earlier login keeps the device (and its transaction ids).
        """
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password if password is not None else self.passwords[user_id],
        }
        if device_id:
            body["device_id"] = device_id
        reply = self.api("POST", "/_matrix/client/v3/login", body=body)
        return reply["user_id"], reply["access_token"], reply["device_id"]

    def whoami(self, token: str) -> str:
        """The user ID an access token belongs to (raises SynapseError if it is not valid)."""
        user_id: str = self.api("GET", "/_matrix/client/v3/account/whoami", token)["user_id"]
        return user_id

    # -- rooms and messages -----------------------------------------------------------------

    def create_room(
        self,
        owner_token: str,
        invite: Sequence[str] = (),
        tokens_to_join: Sequence[str] = (),
        name: str | None = None,
        encrypted: bool = False,
    ) -> str:
        """Create a private room as the owner, invite `invite`, join with each of
        `tokens_to_join` (invited users' tokens), and return the room ID. `encrypted` turns
        on Megolm encryption from the start, as Element does for private rooms."""
        body: dict[str, Any] = {"preset": "private_chat", "invite": list(invite)}
        if encrypted:
            body["initial_state"] = [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
        if name:
            body["name"] = name
        room_id: str = self.api("POST", "/_matrix/client/v3/createRoom", owner_token, body)[
            "room_id"
        ]
        for token in tokens_to_join:
            self.join(token, room_id)
        return room_id

    def join(self, token: str, room_id: str) -> None:
        """Join a room (the user must be invited to a private room)."""
        self.api("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/join", token, {})

    def send_text(
        self,
        token: str,
        room_id: str,
        body: str,
        thread_root: str | None = None,
        reply_to: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Send an `m.text` message and return its event ID.

        `thread_root` puts it in that thread (`m.thread`); `reply_to` makes it a reply (inside the
        thread, a real reply; without one, the thread's fallback reply points at the root).
        The same `txn_id` with the same token sends the event once.
        """
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if thread_root:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": reply_to is None,
                "m.in_reply_to": {"event_id": reply_to or thread_root},
            }
        elif reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        txn_id = txn_id or uuid.uuid4().hex
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{_q(txn_id)}"
        event_id: str = self.api("PUT", path, token, content)["event_id"]
        return event_id

    def messages(self, token: str, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's last `limit` timeline events (all types), oldest first."""
        query = urllib.parse.urlencode({"dir": "b", "limit": limit})
        reply = self.api("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?{query}", token)
        events: list[dict[str, Any]] = reply["chunk"]
        return events[::-1]


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


@pytest.fixture(scope="session")
def synapse() -> Iterator[Synapse]:
    """One running Synapse for the whole test session (skipped if not installed, except in CI)."""
    python = synapse_python()
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "Synapse is not installed (./scripts/test installs it into "
                ".venv-synapse or $SYNAPSE_VENV): in CI the Matrix tests must run",
                pytrace=False,
            )
        pytest.skip("Synapse not installed: run ./scripts/test")
    base = Path(tempfile.mkdtemp(prefix="synapse-"))
    server = Synapse(base, python)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
