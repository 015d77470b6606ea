"""FolderMailer on a temporary folder, SmtpRelayMailer against a local capture SMTP server."""

from __future__ import annotations

import asyncio
import base64
import socket
import stat
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.mail_folder import FolderMailer
from adapters.mail_out import SmtpRelayMailer
from gateway.ports import PermanentError, TransientError
from tests.fakes.smtp_capture import SmtpCapture

FROM = "gateway@example.org"
TO = "oncall@example.org"
PASSWORD = "hunter2-relay-secret"


def message(message_id: str | None = "<incident-1.1@gateway.example.org>", body: str = "") -> bytes:
    headers = [f"From: {FROM}", f"To: {TO}", "Subject: [INC-1] Fire alarm in building B"]
    if message_id is not None:
        headers.append(f"Message-ID: {message_id}")
    text = "\r\n".join(headers) + "\r\n\r\n" + (body or "The alarm went off at 03:12.") + "\r\n"
    return text.encode()


def eml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml"))


@pytest.fixture
async def relay() -> AsyncIterator[SmtpCapture]:
    async with SmtpCapture() as server:
        yield server


def plain_mailer(relay: SmtpCapture, **overrides: object) -> SmtpRelayMailer:
    options: dict[str, object] = {"starttls": False, "timeout_s": 5, "helo_name": "gw.test"}
    options.update(overrides)
    return SmtpRelayMailer(relay.host, relay.port, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# FolderMailer


async def test_folder_mailer_writes_identical_file(tmp_path: Path) -> None:
    """The message lands byte-for-byte in a 0o640 .eml file inside a new 0o750 folder."""
    folder = tmp_path / "outbox"
    raw = message()

    result = await FolderMailer(folder).send(raw, FROM, TO)

    path = Path(result["path"])
    assert path.parent == folder
    assert path.suffix == ".eml"
    assert path.read_bytes() == raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750


async def test_folder_mailer_same_message_id_is_one_file(tmp_path: Path) -> None:
    """Sending the same Message-ID twice overwrites one file instead of adding another."""
    mailer = FolderMailer(tmp_path)

    first = await mailer.send(message(), FROM, TO)
    second = await mailer.send(message(body="Re-rendered on retry."), FROM, TO)

    assert first == second
    assert eml_files(tmp_path) == [Path(first["path"])]
    assert b"Re-rendered on retry." in Path(first["path"]).read_bytes()


async def test_folder_mailer_keeps_one_file_per_recipient(tmp_path: Path) -> None:
    """The same message to two recipients is two files."""
    mailer = FolderMailer(tmp_path)

    await mailer.send(message(), FROM, TO)
    await mailer.send(message(), FROM, "deputy@example.org")

    assert len(eml_files(tmp_path)) == 2


async def test_folder_mailer_without_message_id_hashes_content(tmp_path: Path) -> None:
    """Without a Message-ID, identical content shares a file and different content does not."""
    mailer = FolderMailer(tmp_path)

    await mailer.send(message(message_id=None), FROM, TO)
    await mailer.send(message(message_id=None), FROM, TO)
    assert len(eml_files(tmp_path)) == 1
    await mailer.send(message(message_id=None, body="Another report."), FROM, TO)
    assert len(eml_files(tmp_path)) == 2


async def test_folder_mailer_leaves_no_temp_files(tmp_path: Path) -> None:
    """Only finished .eml files remain in the folder."""
    await FolderMailer(tmp_path).send(message(), FROM, TO)

    assert [p.suffix for p in tmp_path.iterdir()] == [".eml"]


async def test_folder_mailer_unwritable_folder_is_permanent(tmp_path: Path) -> None:
    """A folder path blocked by a regular file is PermanentError."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")

    with pytest.raises(PermanentError):
        await FolderMailer(blocker / "outbox").send(message(), FROM, TO)


# SmtpRelayMailer


async def test_relay_delivers_with_envelope(relay: SmtpCapture) -> None:
    """The relay receives the right envelope and the message bytes unchanged."""
    raw = message()

    result = await plain_mailer(relay).send(raw, FROM, TO)

    [captured] = await relay.wait_for(1)
    assert captured.mail_from == FROM
    assert captured.rcpt_tos == (TO,)
    assert captured.content == raw
    assert result["smtp_code"] == 250
    assert "queued" in result["smtp_message"]


async def test_relay_temporary_refusal_is_transient(relay: SmtpCapture) -> None:
    """A 451 to DATA is TransientError carrying the relay's reply."""
    relay.fail_next("451 4.3.0 try later", stage="DATA")

    with pytest.raises(TransientError) as caught:
        await plain_mailer(relay).send(message(), FROM, TO)

    assert "451" in caught.value.reason
    assert relay.messages == []


async def test_relay_accepts_after_temporary_refusal(relay: SmtpCapture) -> None:
    """After a 451 at RCPT the next send goes through."""
    relay.fail_next("451 4.3.0 try later", stage="RCPT")
    mailer = plain_mailer(relay)

    with pytest.raises(TransientError):
        await mailer.send(message(), FROM, TO)
    await mailer.send(message(), FROM, TO)

    assert len(await relay.wait_for(1)) == 1


async def test_relay_unknown_recipient_is_permanent(relay: SmtpCapture) -> None:
    """A 550 to RCPT is PermanentError naming the refusal."""
    relay.fail_next("550 5.1.1 no such user", stage="RCPT")

    with pytest.raises(PermanentError) as caught:
        await plain_mailer(relay).send(message(), FROM, TO)

    assert "5.1.1" in caught.value.reason


async def test_relay_shutting_down_is_transient(relay: SmtpCapture) -> None:
    """A 421 (relay closing the session) is TransientError."""
    relay.fail_next("421 4.3.2 shutting down", stage="MAIL")

    with pytest.raises(TransientError):
        await plain_mailer(relay).send(message(), FROM, TO)


async def test_relay_connection_refused_is_transient() -> None:
    """Nothing listening on the relay port is TransientError."""
    mailer = SmtpRelayMailer("127.0.0.1", free_port(), starttls=False, timeout_s=5)

    with pytest.raises(TransientError):
        await mailer.send(message(), FROM, TO)


async def test_relay_that_never_greets_times_out_as_transient() -> None:
    """A relay that accepts the connection but stays silent is TransientError."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)

    server = await loop.create_server(Silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mailer = SmtpRelayMailer("127.0.0.1", port, starttls=False, timeout_s=0.2, helo_name="gw.test")
    try:
        with pytest.raises(TransientError):
            await mailer.send(message(), FROM, TO)
    finally:
        server.close()
        for transport in transports:
            transport.close()
        await server.wait_closed()


async def test_relay_without_starttls_is_refused_by_default(relay: SmtpCapture) -> None:
    """With starttls left on, a relay that does not offer STARTTLS gets nothing, for good."""
    mailer = SmtpRelayMailer(relay.host, relay.port, timeout_s=5, helo_name="gw.test")

    with pytest.raises(PermanentError) as caught:
        await mailer.send(message(), FROM, TO)

    assert "STARTTLS" in caught.value.reason
    assert relay.messages == []


async def test_relay_login_then_delivery() -> None:
    """With the right credentials the mailer logs in and delivers."""
    async with SmtpCapture(credentials={"gateway": PASSWORD}) as relay:
        mailer = plain_mailer(relay, username="gateway", password=PASSWORD)

        await mailer.send(message(), FROM, TO)

        [captured] = await relay.wait_for(1)
        assert captured.authenticated


async def test_relay_bad_credentials_are_permanent_and_secret() -> None:
    """A 535 is PermanentError('relay rejected our credentials') without the password."""
    async with SmtpCapture(credentials={"gateway": "the-right-one"}) as relay:
        mailer = plain_mailer(relay, username="gateway", password=PASSWORD)

        with pytest.raises(PermanentError) as caught:
            await mailer.send(message(), FROM, TO)

        assert caught.value.reason == "relay rejected our credentials"
        assert PASSWORD not in "".join(traceback.format_exception(caught.value))
        assert relay.messages == []


@pytest.mark.parametrize("rcpt_to", ["oncall@example.org\r\nRCPT TO:<x@y>", "on call@example.org"])
async def test_relay_invalid_address_is_permanent(relay: SmtpCapture, rcpt_to: str) -> None:
    """An envelope address that cannot be sent safely is PermanentError, and nothing is sent."""
    with pytest.raises(PermanentError):
        await plain_mailer(relay).send(message(), FROM, rcpt_to)

    assert relay.messages == []


def test_relay_repr_hides_password() -> None:
    """Neither repr nor str of the mailer shows the password."""
    mailer = SmtpRelayMailer("relay.example.org", 587, username="gateway", password=PASSWORD)

    assert PASSWORD not in repr(mailer)
    assert PASSWORD not in str(mailer)


async def test_relay_echoing_our_auth_blob_is_redacted_everywhere() -> None:
    """A relay that echoes the AUTH PLAIN blob (and the password) in a refusal: the error
    that reaches the outbox, the timeline, the report and the log has neither."""
    blob = base64.b64encode(f"\0gateway\0{PASSWORD}".encode()).decode()
    login = base64.b64encode(PASSWORD.encode()).decode()
    async with SmtpCapture(credentials={"gateway": PASSWORD}) as relay:
        relay.fail_next(
            f"554 5.7.1 rejected after AUTH PLAIN {blob} / {login} / {PASSWORD}", stage="DATA"
        )
        mailer = plain_mailer(relay, username="gateway", password=PASSWORD)
        with pytest.raises(PermanentError) as caught:
            await mailer.send(message(), FROM, TO)
    text = "".join(traceback.format_exception(caught.value))
    assert "554" in caught.value.reason and "<redacted>" in caught.value.reason
    for secret in (blob, blob.rstrip("="), login.rstrip("="), PASSWORD):
        assert secret not in text
