"""Automatic mail that used to be paged and answered, one message per kind, with the sign
that must recognise it: challenge-response, Lotus Notes AUTO:, read receipts (text, TNEF,
an MDN inside multipart/mixed), list moderation notices, anti-virus and postmaster-like
senders, [AUTO GENERATED], digests. Pure data (no gateway imports), shared by
tests/test_automail_signs.py and bench/automail_quality.py."""

from __future__ import annotations

import base64

import pytest


def mail(
    subject: str,
    body: str,
    sender: str = "Ana Silva <ana@tenant.example>",
    extra: str = "",
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: emergency@paas.example\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@tenant.example>\r\n"
        f"{extra}MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}\r\n"
    ).encode()


def tnef_receipt() -> bytes:
    """An Exchange read receipt as Outlook sends it inside winmail.dat (TNEF)."""
    # TNEF signature, then attMessageClass holding the report's message class.
    tnef = (
        b"\x78\x9f\x3e\x22\x01\x00\x01\x08\x80\x07\x00\x18\x00\x00\x00"
        b"REPORT.IPM.Note.IPNRN\x00\x00\x00\x00" + b"\x00" * 64
    )
    return mail(
        "Read: Production apps all returning 503",
        "\r\n".join(
            [
                "--b1",
                "Content-Type: text/plain; charset=us-ascii",
                "",
                "",
                "--b1",
                "Content-Type: application/ms-tnef; name=winmail.dat",
                "Content-Transfer-Encoding: base64",
                "",
                base64.b64encode(tnef).decode(),
                "--b1--",
            ]
        ),
        content_type='multipart/mixed; boundary="b1"',
    )


SIGNS = [
    pytest.param(
        mail(
            "Please confirm your message",
            "Hello, I'm protecting myself from "
            "receiving junk mail. Just this once, click the link below so I can "
            "receive your emails.",
        ),
        "challenge-response",
        id="challenge-response",
    ),
    pytest.param(
        mail(
            "Re: Site down [SpamArrest: verification required]",
            "Please verify that you are a real person.",
        ),
        "challenge-response",
        id="spamarrest",
    ),
    pytest.param(
        mail(
            "AUTO: Carla Mendes is out of the office (returning 30/11/2026)",
            "I am out of the office until 30/11/2026.",
        ),
        "Lotus Notes",
        id="lotus-notes-auto",
    ),
    pytest.param(
        mail(
            "Read: Production apps all returning 503",
            "Your message\r\n\r\n  To: emergency\r\n  Subject: Production apps\r\n\r\n"
            "was read on 23/11/2026 10:05.",
        ),
        "read receipt",
        id="outlook-receipt",
    ),
    pytest.param(
        mail(
            "Return Receipt",
            "Your document: Production apps all returning 503\r\n"
            "was received by: Carla Mendes/Tenant\r\nat: 23/11/2026 10:05:01",
        ),
        "read receipt",
        id="notes-receipt",
    ),
    pytest.param(tnef_receipt(), "TNEF (REPORT.IPM.Note.IPNRN)", id="tnef-receipt"),
    pytest.param(
        mail(
            "Disposition notification",
            "\r\n".join(
                [
                    "--b2",
                    "Content-Type: text/plain",
                    "",
                    "Displayed.",
                    "--b2",
                    "Content-Type: multipart/report; boundary=b3;"
                    " report-type=disposition-notification",
                    "",
                    "--b3",
                    "Content-Type: message/disposition-notification",
                    "",
                    "Final-Recipient: rfc822; ana@tenant.example",
                    "Disposition: manual-action/MDN-sent-manually; displayed",
                    "--b3--",
                    "--b2--",
                ]
            ),
            content_type='multipart/mixed; boundary="b2"',
        ),
        "message/disposition-notification",
        id="mdn-inside-multipart",
    ),
    pytest.param(
        mail(
            "Your message to Ops awaits moderator approval",
            "Your mail to 'Ops' is being held until the list moderator can review it.",
        ),
        "list software notice",
        id="moderation-subject",
    ),
    pytest.param(
        mail(
            "Production apps all returning 503",
            "Your mail to 'Ops' with the subject\r\n\r\n    Production apps\r\n\r\nIs "
            "being held until the list moderator can review it for approval.",
        ),
        "list moderation notice",
        id="moderation-text",
    ),
    pytest.param(
        mail(
            "Delivery failure notification",
            "Your message could not be delivered: it contained a virus.",
            sender="IT Security <itsec@tenant.example>",
        ),
        "automatic subject",
        id="antivirus-normal-sender",
    ),
    pytest.param(
        mail(
            "Returned Mail",
            "The message below could not be delivered.",
            sender="Mail Administrator <mailadm@mx.tenant.example>",
        ),
        "Mail Administrator",
        id="returned-mail-admin",
    ),
    pytest.param(
        mail(
            "Mail Delivery Warning",
            "Delivery has been delayed for 4 hours.",
            sender="mailer@mx.tenant.example",
        ),
        "MAILER",
        id="delivery-warning",
    ),
    pytest.param(
        mail("[AUTO GENERATED] Ticket 4411 received", "We received your request."),
        "tagged as automatic",
        id="auto-generated-tag",
    ),
    pytest.param(
        mail(
            "[emergency] Digest for emergency@paas.example - 3 updates in 2 topics", "Topic digest"
        ),
        "list software notice",
        id="google-digest",
    ),
    pytest.param(
        mail("Ops Digest, Vol 12, Issue 3", "Today's Topics:"),
        "list software notice",
        id="mailman-digest",
    ),
    pytest.param(
        mail("Site down", "x", extra="Precedence: auto_reply\r\n"),
        "Precedence",
        id="precedence-auto-reply",
    ),
    pytest.param(
        mail(
            "Out",
            "Away",
            sender="\"'Mail Delivery Subsystem' via Emergency\" <emergency@paas.example>",
            extra="X-Original-From: MAILER-DAEMON@googlemail.com\r\n"
            "List-ID: <emergency.paas.example>\r\n",
        ),
        "X-Original-From",
        id="daemon-behind-rewritten-from",
    ),
]
