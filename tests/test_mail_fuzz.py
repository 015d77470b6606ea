"""Fuzzing the MIME path: whatever bytes arrive, parsing and triage give a result or an
unparseable verdict (never another exception), header values are single lines, and the
reply we render from them never gains a header."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.parse.mail import UnparseableMessage, parse_mail
from gateway.parse.sandbox import MailJob, prepare
from gateway.plan.replies import Sender, one_line, render
from rules.book import default_rulebook
from rules.types import Mailbox

BOOK = default_rulebook()
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SENDER = Sender(
    "emergency@gw.example", "Platform support", "gw.example", "chatops-gateway; gw.example"
)

_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Subject",
        "Reply-To",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Date",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Auto-Submitted",
        "Precedence",
        "List-Id",
        "Return-Path",
        "X-Anything",
    ]
)
_CHARSETS = st.sampled_from(
    ["utf-8", "iso-8859-1", "us-ascii", "x-unknown", "utf-7", "shift_jis", "", '"utf-8"']
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
_WORDS = st.one_of(
    _TEXT,
    st.builds(
        lambda cs, enc, t: f"=?{cs}?{enc}?{t}?=",
        _CHARSETS,
        st.sampled_from("qQbBx"),
        st.text(st.sampled_from("abc=_?0D0A3D=E2=80"), max_size=20),
    ),
    st.sampled_from(
        [
            "<a@b>",
            "<<>>",
            '"quoted, name" <x@y>',
            "((((((",
            "\\",
            ";;",
            'multipart/mixed; boundary="b"',
            "text/html; charset=x-unknown",
            "base64",
            "quoted-printable",
            "attachment; filename*=utf-8''%FF",
        ]
    ),
)
_HEADER_VALUE = st.lists(_WORDS, max_size=6).map(" ".join)


def _header_bytes(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogatepass")


@st.composite
def _entity(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME entity: random headers, and either a multipart of entities or a leaf body."""
    headers = b"".join(
        _header_bytes(n, v) for n, v in draw(st.lists(st.tuples(_NAMES, _HEADER_VALUE), max_size=4))
    )
    if depth < 3 and draw(st.booleans()):
        boundary = draw(st.sampled_from(["b", "=_x", "a b", "--", ""]))
        subtype = draw(st.sampled_from(["mixed", "alternative", "report", "related"]))
        children = draw(st.lists(_entity(depth + 1), max_size=3))
        ctype = _header_bytes("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + child + b"\r\n" for child in children)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"
        return headers + ctype + b"\r\n" + body
    leaf_type = draw(
        st.sampled_from(
            [
                "text/plain",
                "text/html",
                "message/rfc822",
                "message/delivery-status",
                "application/octet-stream",
                "text/plain; charset=utf-8",
            ]
        )
    )
    cte = draw(st.sampled_from(["7bit", "base64", "quoted-printable", "8bit", "x-uuencode"]))
    body = draw(
        st.one_of(st.binary(max_size=200), _TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
    )
    return (
        headers
        + _header_bytes("Content-Type", leaf_type)
        + _header_bytes("Content-Transfer-Encoding", cte)
        + b"\r\n"
        + body
    )


_MESSAGES = st.one_of(_entity(), st.binary(max_size=400))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSAGES)
def test_parsing_and_triage_never_crash(raw: bytes) -> None:
    """Random MIME structures and raw bytes: a triaged mail or an unreadable verdict, no
    exception, and every header value the pipeline sees is one line."""
    try:
        mail = parse_mail(raw, "fuzz@tenant.example")
    except UnparseableMessage:
        mail = None
    result = prepare(MailJob(raw, "fuzz@tenant.example", Mailbox.EMERGENCY), NOW, BOOK)
    assert result.bug is None
    if mail is None:
        assert result.problem is not None and result.mail is None
        return
    assert result.decision is not None
    for value in (mail.subject, mail.from_addr, mail.from_name, *mail.headers.values()):
        assert "\n" not in value and "\r" not in value


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(max_size=300),
    name=st.text(max_size=100),
    body=st.text(max_size=300),
    msgid=st.text(max_size=60),
)
def test_rendered_reply_has_exactly_our_headers(
    subject: str, name: str, body: str, msgid: str
) -> None:
    """Whatever the subject, name, body and ids, the reply has our fixed header set, one To,
    the subject as cleaned, and the body intact."""
    out = render(
        sender=Sender("emergency@gw.example", name, "gw.example", "loop"),
        to="alice@tenant.example",
        subject=subject,
        body=body,
        message_id="<1.ack@gw.example>",
        in_reply_to=msgid,
        references=[msgid],
        now=NOW,
    )
    msg = email.message_from_bytes(out.data, policy=policy.default)
    names = [n.lower() for n in msg]
    expected = {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "auto-submitted",
        "x-auto-response-suppress",
        "x-chatops-loop",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    assert expected <= set(names) <= expected | {"in-reply-to", "references"}
    assert len(names) == len(set(names))
    assert msg.get_all("To") == ["alice@tenant.example"]
    assert " ".join(str(msg["Subject"]).split()) == " ".join(one_line(subject, 250).split())
    expected_body = body.replace("\r\n", "\n").replace("\r", "\n")
    content = msg.get_content().replace("\r\n", "\n")
    assert content.rstrip("\n") == expected_body.rstrip("\n")
    assert all(len(line) <= 998 for line in out.data.split(b"\r\n"))
