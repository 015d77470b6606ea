"""No CR or LF from input reaches an outbound header: subjects, display names and addresses
carrying CR/LF (raw, and hidden in RFC 2047 encoded-words) go through the whole pipeline,
and neither the acknowledgements' headers (raw or decoded) nor the pages' summaries hold
a line break or an extra header."""

from __future__ import annotations

import asyncio
import base64
import re
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

from tests.conftest import IN_HOURS, eventually, make_config, running, ticking
from tests.fakes.pagerduty import FakePagerDuty

ROUTING_KEY = "HeaderInjectionKey0123456789abcd"
B64 = base64.b64encode(b"Site down\r\nX-Injected: yes").decode()
CASES = [
    # (Subject, From) as they appear in the raw message
    (b"Site down A\rBcc: victim@evil.example", b"Alice <alice@tenant.example>"),
    (b"=?utf-8?q?Site_down_B=0D=0ABcc:_victim@evil.example?=", b"alice@tenant.example"),
    (f"=?utf-8?b?{B64}?=".encode(), b"alice@tenant.example"),
    (b"Site down D", b"=?utf-8?q?Alice=0D=0ABcc:_victim@evil.example?= <alice@tenant.example>"),
    (b"Site down E", b'"Alice\rBcc: victim@evil.example" <alice@tenant.example>'),
    (b"=?utf-8?q?Site_down_F=0AX-Injected:_yes=0D?=", b"alice@tenant.example"),
]
ALLOWED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-loop",
    "x-chatops-loop",
    "precedence",
    "reply-to",
}


async def send_raw(port: int, raw: bytes) -> bytes:
    """One message exactly as given (smtplib and aiosmtplib would rewrite a bare CR)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for line in (
        None,
        b"EHLO x\r\n",
        b"MAIL FROM:<alice@tenant.example>\r\n",
        b"RCPT TO:<emergency@localhost>\r\n",
        b"DATA\r\n",
        raw + b"\r\n.\r\n",
        b"QUIT\r\n",
    ):
        if line is not None:
            writer.write(line)
        while True:
            reply = await reader.readline()
            if reply[3:4] != b"-":
                break
        replies.append(reply)
    writer.close()
    await writer.wait_closed()
    return replies[5]


def header_problems(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[0]
    problems = []
    for line in re.split(rb"\r?\n(?![ \t])", head):
        if b"\r" in line.replace(b"\r\n", b"") or re.search(rb"(?<!\r)\n(?![ \t])", line):
            problems.append(f"bare line break in {line!r}")
    msg = BytesParser(policy=compat32).parsebytes(data, headersonly=True)
    for name, value in msg.items():
        if name.lower() not in ALLOWED:
            problems.append(f"unexpected header {name}")
        decoded = str(make_header(decode_header(re.sub(r"\r?\n[ \t]", " ", str(value)))))
        if "\r" in decoded or "\n" in decoded:
            problems.append(f"line break in decoded {name}: {decoded!r}")
    return problems


async def test_cr_lf_from_input_never_reaches_an_outbound_header(tmp_path: Path) -> None:
    """Six hostile reports: each gets an acknowledgement and a page, and no outbound header
    (raw or decoded) nor page summary carries a CR, an LF or an injected header."""
    async with FakePagerDuty(routing_keys={ROUTING_KEY}) as pd:
        # Six reports that look alike from one tenant: storm joining is off, so each is
        # its own incident with its own acknowledgement and page.
        cfg = make_config(
            tmp_path,
            pagerduty={"routing_key": {"value": ROUTING_KEY}, "url": pd.url},
            limits={"storm_window_s": 0},
        )
        async with running(cfg, ticking(IN_HOURS)) as app:
            assert app.smtp_port is not None
            for n, (subject, sender) in enumerate(CASES):
                raw = (
                    b"From: "
                    + sender
                    + b"\r\nTo: emergency@localhost\r\nSubject: "
                    + subject
                    + b"\r\nMessage-ID: <inj-"
                    + str(n).encode()
                    + b"@tenant.example>\r\n\r\nAll our apps return 502 (report "
                    + str(n).encode()
                    + b")."
                )
                assert (await send_raw(app.smtp_port, raw)).startswith(b"250")
            folder = tmp_path / "outgoing-mail"
            # Cases D and E hide the tenant's address behind a broken display name, so the
            # sender is not the allow-listed tenant: an unverified ticket, acknowledged, no page.
            await eventually(
                lambda: (
                    len(list(folder.glob("*.eml"))) == len(CASES)
                    and len(pd.events) == len(CASES) - 2
                ),
                timeout=30,
            )
    mails = sorted(folder.glob("*.eml"))
    problems = {p.name: header_problems(p.read_bytes()) for p in mails}
    summaries = [e["payload"]["summary"] for e in pd.events]
    bad_pages = [s for s in summaries if "\r" in s or "\n" in s]
    print(
        f"\nFIGURE header injection: reports={len(CASES)} acknowledgements={len(mails)} "
        f"pages={len(summaries)} header_problems={sum(map(len, problems.values()))} "
        f"page_summaries_with_breaks={len(bad_pages)}"
    )
    assert {name: p for name, p in problems.items() if p} == {}
    assert bad_pages == []


def test_the_header_check_catches_what_it_looks_for() -> None:
    """The check itself is not vacuous: an extra header, an encoded line break and a bare CR
    are each reported."""
    assert header_problems(b"From: a@x\r\nBcc: v@evil\r\n\r\nbody") == ["unexpected header Bcc"]
    assert header_problems(b"Subject: =?utf-8?q?a=0D=0Ab?=\r\n\r\nbody")[0].startswith(
        "line break in decoded Subject"
    )
    assert header_problems(b"Subject: a\rb\r\n\r\nbody")[0].startswith("bare line break")
