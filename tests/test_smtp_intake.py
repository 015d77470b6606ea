"""The SMTP listener over loopback with a real client: codes, limits, durability."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from adapters.smtp_intake import SmtpIntakeServer
from gateway.run.intake import MailIntake, canonical_address, resend_key
from gateway.store.sqlite import SqliteStore
from tests.conftest import email_bytes


@pytest.fixture
async def server(store: SqliteStore) -> AsyncIterator[SmtpIntakeServer]:
    intake = MailIntake(store, ["emergency@localhost"], ["support@localhost"], lambda: None)
    srv = SmtpIntakeServer(
        intake,
        host="127.0.0.1",
        port=0,
        hostname="localhost",
        max_message_bytes=64 * 1024,
        max_recipients=3,
        commit_timeout_s=5,
    )
    await srv.start()
    yield srv
    await srv.stop()


async def client(srv: SmtpIntakeServer) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=srv.port, start_tls=False)
    await c.connect()
    await c.ehlo()
    return c


async def test_accepted_message_is_in_the_inbox(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """250 comes back only with the message committed, envelope and bytes intact."""
    raw = email_bytes()
    c = await client(server)
    _, reply = await c.sendmail("alice@tenant.example", ["Emergency@LOCALHOST"], raw)
    await c.quit()
    assert reply.startswith("2.0.0 OK queued as")
    [row] = await store.pending_inbox()
    assert row.mail_from == "alice@tenant.example" and row.mailbox == "emergency"
    assert row.raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


async def test_unknown_recipient_is_refused_at_rcpt(server: SmtpIntakeServer) -> None:
    """A recipient that is not one of our mailboxes gets 550 5.1.1."""
    c = await client(server)
    await c.mail("alice@tenant.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await c.rcpt("nobody@localhost")
    await c.quit()
    assert err.value.code == 550 and err.value.message.startswith("5.1.1")


async def test_too_many_recipients_get_452(server: SmtpIntakeServer) -> None:
    """Past the recipient limit, each further RCPT gets 452 4.5.3."""
    c = await client(server)
    await c.mail("alice@tenant.example")
    for _ in range(3):
        await c.rcpt("emergency@localhost")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await c.rcpt("support@localhost")
    await c.quit()
    assert err.value.code == 452


async def test_oversize_message_gets_552_and_is_not_stored(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """A message over the size limit gets 552 5.3.4 (declared or not) and nothing is kept."""
    c = await client(server)
    big = email_bytes(body="x" * 70 * 1024)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:  # SIZE= in MAIL FROM
        await c.sendmail("alice@tenant.example", ["emergency@localhost"], big)
    await c.mail("alice@tenant.example")  # no SIZE: refused after the data
    await c.rcpt("emergency@localhost")
    with pytest.raises(aiosmtplib.SMTPDataError) as undeclared:
        await c.data(big)
    await c.quit()
    for err in (declared, undeclared):
        assert err.value.code == 552 and err.value.message.startswith("5.3.4")
    assert await store.pending_inbox() == []


async def test_store_failure_answers_451_without_details(
    server: SmtpIntakeServer, store: SqliteStore
) -> None:
    """When the store cannot commit, the client gets 451 4.3.0 and no exception text."""
    await store.close()
    c = await client(server)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await c.sendmail("alice@tenant.example", ["emergency@localhost"], email_bytes())
    assert err.value.code == 451 and err.value.message.startswith("4.3.0")
    assert "Store" not in err.value.message and "closed" not in err.value.message


async def test_stopping_server_refuses_new_mail_with_421(server: SmtpIntakeServer) -> None:
    """Once stopping, a new transaction is refused with a temporary 421."""
    c = await client(server)
    server.stopping = True
    with pytest.raises(aiosmtplib.SMTPResponseException) as err:
        await c.mail("alice@tenant.example")
    assert err.value.code == 421


def test_canonical_address_drops_detail_and_case() -> None:
    """Plus-addressing and case do not change which mailbox an address is."""
    assert canonical_address("<Emergency+INC-4@LocalHost>") == "emergency@localhost"


def test_resend_key_depends_on_sender_and_message_id() -> None:
    """Same sender and Message-ID give the same key; another sender or no id does not."""
    raw = b"Message-ID:\r\n <abc@x>\r\nSubject: s\r\n\r\nbody"
    assert resend_key("a@x", raw) == resend_key("A@X", raw.replace(b"\r\n <", b" <"))
    assert resend_key("b@x", raw) != resend_key("a@x", raw)
    assert resend_key("a@x", b"Subject: s\r\n\r\nMessage-ID: <abc@x>") is None
