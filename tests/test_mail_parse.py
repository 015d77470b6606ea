"""Parsing real-world inbound mail: bodies, charsets, quotes, ids, attachments, robots."""

from __future__ import annotations

import base64
import contextlib
import quopri
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.parse.mail import (
    ParsedMail,
    UnparseableMessage,
    automatic_reason,
    html_to_text,
    normalise_msgid,
    parse_mail,
    split_msgids,
    strip_quoted,
)

HUMAN_HEADERS = (
    b"From: Alice Tenant <alice@tenant.example>\n"
    b"To: emergency@gw.example\n"
    b"Subject: Site down\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
    b"Message-ID: <a1@tenant.example>\n"
)


def raw_mail(body: bytes, *extra: bytes, headers: bytes = HUMAN_HEADERS) -> bytes:
    """A message: the usual human headers, any extra header lines, a blank line, the body."""
    return headers + b"".join(line + b"\n" for line in extra if line) + b"\n" + body


def human_mail(body: str = "All our apps return 502 since 09:50.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice Tenant <alice@tenant.example>"
    msg["To"] = "emergency@gw.example"
    msg["Subject"] = "Site down"
    msg["Message-ID"] = "<a1@tenant.example>"
    msg.set_content(body)
    return msg


# --- bodies and charsets --------------------------------------------------------------------


def test_plain_text_message_fields() -> None:
    """A plain message yields its subject, sender, date, id and body text."""
    mail = parse_mail(raw_mail(b"All our apps return 502 since 09:50.\n"))
    assert mail.subject == "Site down"
    assert (mail.from_addr, mail.from_name) == ("alice@tenant.example", "Alice Tenant")
    assert mail.date == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert mail.message_id == "<a1@tenant.example>"
    assert mail.text == mail.new_text == "All our apps return 502 since 09:50."
    assert mail.attachments == ()
    assert mail.automatic is None


def test_multipart_alternative_prefers_plain_text() -> None:
    """In multipart/alternative the text/plain rendering is the body, not the HTML one."""
    msg = human_mail("Plain rendering: database is down.")
    msg.add_alternative("<p>HTML rendering: <b>database</b> is down.</p>", subtype="html")
    mail = parse_mail(msg.as_bytes())
    assert mail.text == "Plain rendering: database is down."
    assert mail.attachments == ()


def test_html_only_mail_is_converted_to_text() -> None:
    """HTML-only mail becomes text: tags, styles and scripts gone, entities decoded."""
    html = (
        "<html><head><style>p {color: red}</style><script>var x = 1;</script></head>"
        "<body><p>Disk &amp; CPU &gt; 90%&nbsp;on <b>db-1</b> &eacute;t&eacute;</p></body></html>"
    )
    msg = human_mail()
    msg.set_content(html, subtype="html")
    mail = parse_mail(msg.as_bytes())
    assert mail.text == "Disk & CPU > 90% on db-1 été"
    assert "<" not in mail.text and "color" not in mail.text and "var x" not in mail.text


def test_html_to_text_keeps_links_and_paragraphs() -> None:
    """html_to_text keeps link targets and paragraph breaks, without wrapping long lines."""
    text = html_to_text(
        f"<p>See <a href='https://status.example/x'>status</a></p><p>{'a' * 150}</p>"
    )
    assert "https://status.example/x" in text
    assert text.endswith("\n\n" + "a" * 150)


@pytest.mark.parametrize(
    ("charset", "encoded", "expected"),
    [
        ("iso-8859-1", "Caf\u00e9 d\u00e9j\u00e0 ferm\u00e9".encode("latin-1"), "Café déjà fermé"),
        ("windows-1252", b"\x93Down\x94 \x96 costs \x80100/min", "“Down” – costs €100/min"),
        # Mislabelled: curly quotes sent as "iso-8859-1" decode as the sender meant them.
        ("iso-8859-1", b"\x93Down\x94", "“Down”"),
    ],
)
def test_legacy_charsets_are_decoded(charset: str, encoded: bytes, expected: str) -> None:
    """ISO-8859-1 and windows-1252 bodies decode to the intended characters."""
    body = base64.encodebytes(encoded)
    mail = parse_mail(
        raw_mail(
            body,
            f"Content-Type: text/plain; charset={charset}".encode(),
            b"Content-Transfer-Encoding: base64",
        )
    )
    assert mail.text == expected


@pytest.mark.parametrize("charset", ["x-klingon-42", "base64", "idna", '""', '"a\x00b"'])
def test_unknown_or_unusable_charset_is_decoded_with_replacement(charset: str) -> None:
    """An unknown charset (or a codec that is not a text encoding) degrades, never raises."""
    mail = parse_mail(
        raw_mail(
            b"Server \xff\xfe down",
            f"Content-Type: text/plain; charset={charset}".encode(),
            b"Content-Transfer-Encoding: 8bit",
        )
    )
    assert mail.text.startswith("Server ") and mail.text.endswith(" down")


@pytest.mark.parametrize("charset", ["us-ascii", "iso-2022-jp", "utf-7"])
def test_mislabelled_utf8_body_is_decoded_as_utf8(charset: str) -> None:
    """A body whose bytes do not fit its declared 7-bit charset but are UTF-8 decodes as UTF-8."""
    mail = parse_mail(
        raw_mail(
            "Zürich DC offline".encode(), f"Content-Type: text/plain; charset={charset}".encode()
        )
    )
    assert mail.text == "Zürich DC offline"


def test_unlabelled_body_that_is_not_utf8_falls_back_to_windows_1252() -> None:
    """An unlabelled 8-bit body that is not UTF-8 decodes as windows-1252, never raising."""
    assert parse_mail(raw_mail(b"Caf\xe9 \x80 down")).text == "Café € down"


def test_quoted_printable_body_is_decoded() -> None:
    """A quoted-printable body is decoded, soft line breaks joined."""
    text = "Réplication arrêtée sur " + "x" * 90
    body = quopri.encodestring(text.encode("utf-8"))
    assert b"=\n" in body  # a soft line break really is exercised
    mail = parse_mail(
        raw_mail(
            body,
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Transfer-Encoding: quoted-printable",
        )
    )
    assert mail.text == text


def test_base64_body_is_decoded() -> None:
    """A base64 body is decoded; broken padding does not raise."""
    body = base64.encodebytes("Ошибка 500 на всех узлах".encode())
    headers = (b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: base64")
    assert parse_mail(raw_mail(body, *headers)).text == "Ошибка 500 на всех узлах"
    assert isinstance(parse_mail(raw_mail(body.rstrip(b"=\n") + b"!", *headers)), ParsedMail)


def test_rfc2047_subject_and_from_name_are_decoded() -> None:
    """Encoded words in Subject and in the From display name are decoded."""
    headers = (
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <JM@Example.DE>\n"
        b"Subject: =?iso-8859-1?q?St=F6rung_im_Rechenzentrum?=\n"
    )
    mail = parse_mail(raw_mail(b"Bitte dringend melden.", headers=headers))
    assert mail.subject == "Störung im Rechenzentrum"
    assert (mail.from_addr, mail.from_name) == ("jm@example.de", "Jürgen Müller")


def test_encoded_display_name_with_comma_keeps_the_address() -> None:
    """A decoded display name containing a comma does not split the From address."""
    mail = parse_mail(raw_mail(b"x", headers=b"From: =?utf-8?q?Smith=2C_John?= <j@x.example>\n"))
    assert (mail.from_addr, mail.from_name) == ("j@x.example", "Smith, John")


def test_raw_8bit_headers_are_decoded() -> None:
    """Raw UTF-8 and raw Latin-1 header bytes (no encoded words) decode, never as surrogates."""
    utf8 = parse_mail(raw_mail(b"x", headers="Subject: Ausfall in Köln\n".encode()))
    latin1 = parse_mail(raw_mail(b"x", headers=b"Subject: Panne \xe0 Lyon\n"))
    assert (utf8.subject, latin1.subject) == ("Ausfall in Köln", "Panne à Lyon")


def test_encoded_crlf_in_subject_is_folded_to_a_space() -> None:
    """An encoded CR/LF in the subject becomes a space, so no header can be injected."""
    headers = b"From: a@x.example\nSubject: =?utf-8?q?Help=0D=0ABcc:_victim@x.example?=\n"
    mail = parse_mail(raw_mail(b"x", headers=headers))
    assert mail.subject == "Help Bcc: victim@x.example"
    assert all("\r" not in v and "\n" not in v for v in mail.headers.values())
    assert mail.headers["subject"] == mail.subject


def test_header_map_has_lowercased_names_and_first_values() -> None:
    """headers maps each lowercased name to its first value."""
    mail = parse_mail(raw_mail(b"x", b"X-Tenant-ID: acme", b"X-Tenant-ID: other"))
    assert mail.headers["x-tenant-id"] == "acme"
    assert mail.headers["from"] == "Alice Tenant <alice@tenant.example>"


# --- senders, dates, ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    "from_line",
    [
        b"",
        b"From: \n",
        b"From: not an address at all\n",
        b"From: <@\n",
        b"From: " + b"(" * 5000 + b"\n",
    ],
)
def test_missing_or_unparseable_from_gives_empty_address(from_line: bytes) -> None:
    """A missing or unparseable From (even one the stdlib parser chokes on) gives ""."""
    mail = parse_mail(raw_mail(b"x", headers=from_line + b"Subject: s\n"))
    assert mail.from_addr == ""


def test_reply_to_is_a_bare_lowercased_address() -> None:
    """Reply-To comes back as the bare address, lowercased; absent is None."""
    mail = parse_mail(raw_mail(b"x", b"Reply-To: Ops Desk <Ops@Tenant.Example>"))
    assert mail.reply_to == "ops@tenant.example"
    assert parse_mail(raw_mail(b"x")).reply_to is None


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        (
            "Mon, 23 Nov 2026 11:00:00 +0100",
            datetime(2026, 11, 23, 11, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("Mon, 23 Nov 2026 10:00:00 -0000", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("yesterday-ish", None),
        ("Mon, 99 Foo 99999 99:99:99 +9999", None),
    ],
)
def test_date_is_aware_or_none(date: str, expected: datetime | None) -> None:
    """Date is an aware datetime ("-0000" taken as UTC) or None when unreadable."""
    headers = f"From: a@x.example\nDate: {date}\n".encode()
    parsed = parse_mail(raw_mail(b"x", headers=headers)).date
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


def test_message_ids_are_normalised_and_references_split() -> None:
    """Message-ID is normalised; In-Reply-To and References come back as ordered id tuples."""
    headers = (
        b"From: a@x.example\n"
        b"Message-ID:   <Mixed.Case@host.example>  (added by relay)\n"
        b"In-Reply-To: Your message of Monday <p2@x.example>\n"
        b"References: <p1@x.example>\n\t<p2@x.example> <p1@x.example>\n"
    )
    mail = parse_mail(raw_mail(b"x", headers=headers))
    assert mail.message_id == "<Mixed.Case@host.example>"
    assert mail.in_reply_to == ("<p2@x.example>",)
    assert mail.references == ("<p1@x.example>", "<p2@x.example>")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@host>", "<abc@host>"),
        ("  <abc@host>\r\n", "<abc@host>"),
        ("abc@host", "<abc@host>"),
        ("<abc@\r\n host>", "<abc@host>"),
        ("", None),
        ("<>", None),
        ("<", None),
        ("garbage", None),
        ("<no-at-sign>", None),
        ("<a\x00b@host>", None),
    ],
)
def test_normalise_msgid(value: str, expected: str | None) -> None:
    """normalise_msgid returns "<local@domain>" or None for garbage."""
    assert normalise_msgid(value) == expected


def test_split_msgids_accepts_bare_ids_when_no_brackets() -> None:
    """split_msgids reads bracketed ids, or whitespace/comma separated bare ids."""
    assert split_msgids("<a@x> junk <b@y>") == ("<a@x>", "<b@y>")
    assert split_msgids("a@x, b@y") == ("<a@x>", "<b@y>")
    assert split_msgids("") == ()


# --- quoted history and signatures ----------------------------------------------------------


def test_gmail_reply_keeps_only_the_new_lines() -> None:
    """A Gmail-style reply: the attribution line and ">" quotes are stripped from new_text."""
    body = (
        b"Still down for us, now also the API.\n\n"
        b"On Mon, 23 Nov 2026 at 10:00, Support <support@gw.example> wrote:\n"
        b"> We are looking into it.\n>\n> > Site down\n"
    )
    mail = parse_mail(raw_mail(body))
    assert mail.new_text == "Still down for us, now also the API."
    assert "We are looking into it." in mail.text


def test_attribution_wrapped_over_two_lines_is_stripped() -> None:
    """An attribution line wrapped over two lines is stripped with the quote it introduces."""
    text = (
        "Now the database too.\n\nOn Mon, 23 Nov 2026 at 10:00 Support Desk <\n"
        "support@gw.example> wrote:\n\n> We are looking into it."
    )
    assert strip_quoted(text) == "Now the database too."


@pytest.mark.parametrize(
    "attribution",
    [
        "Le lun. 23 nov. 2026 à 10:00, Support <support@gw.example> a écrit :",
        "Am 23.11.2026 um 10:00 schrieb Support <support@gw.example>:",
        "El lun, 23 nov 2026 a las 10:00, Support (<support@gw.example>) escribió:",
        "Support Desk <support@gw.example> wrote:",
    ],
)
def test_non_english_attribution_lines_are_stripped(attribution: str) -> None:
    """French, German and Spanish attribution lines are recognised too."""
    assert strip_quoted(f"Merci, toujours en panne.\n\n{attribution}\n> Old text") == (
        "Merci, toujours en panne."
    )


def test_interleaved_reply_keeps_the_answers() -> None:
    """In an inline reply the quoted lines go but the answers between them stay."""
    text = (
        "On Mon, 23 Nov 2026, Support <s@gw.example> wrote:\n"
        "> Which region?\neu-west-1\n> Since when?\nSince 09:50 UTC"
    )
    assert strip_quoted(text) == "eu-west-1\nSince 09:50 UTC"


def test_outlook_original_message_block_is_cut() -> None:
    """Everything from an Outlook "-----Original Message-----" line on is history."""
    body = (
        b"Payments failing again.\r\n\r\n-----Original Message-----\r\n"
        b"From: Support\r\nSent: Monday\r\nSubject: RE: Payments\r\n\r\nWe fixed it.\r\n"
    )
    assert parse_mail(raw_mail(body)).new_text == "Payments failing again."


@pytest.mark.parametrize("separator", ["", "________________________________\n"])
def test_outlook_header_block_is_cut(separator: str) -> None:
    """An Outlook From:/Sent:/To:/Subject: block (with or without the rule above it) is cut."""
    text = (
        f"VPN is down for the whole office.\n\n{separator}"
        "From: Support Desk <support@gw.example>\nSent: Monday, 23 November 2026 10:00\n"
        "To: Alice Tenant <alice@tenant.example>\nSubject: RE: VPN\n\nPlease restart it."
    )
    assert strip_quoted(text) == "VPN is down for the whole office."


def test_outlook_html_reply_keeps_only_the_new_text() -> None:
    """An HTML Outlook reply: the rule and the bold header block are cut after conversion."""
    html = (
        "<div>Still broken, please call me.</div><hr><div><b>From:</b> Support &lt;s@gw.example&gt;"
        "<br><b>Sent:</b> Monday, 23 November 2026 10:00<br><b>To:</b> Alice<br>"
        "<b>Subject:</b> RE: VPN</div><div>We restarted it.</div>"
    )
    msg = human_mail()
    msg.set_content(html, subtype="html")
    assert parse_mail(msg.as_bytes()).new_text == "Still broken, please call me."


def test_forwarded_history_is_cut() -> None:
    """A forwarded-message marker starts history."""
    text = "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: monitor@x\n\nCPU 100%"
    assert strip_quoted(text) == "FYI, see below."


@pytest.mark.parametrize("footer", ["-- \nAlice Tenant\nACME Ltd", "Sent from my iPhone"])
def test_signature_and_mobile_footer_are_stripped(footer: str) -> None:
    """The "-- " signature delimiter and mobile footers end the new text."""
    mail = parse_mail(raw_mail(f"Printer on fire.\n\n{footer}\n".encode()))
    assert mail.new_text == "Printer on fire."


def test_pasted_log_after_wrote_is_kept() -> None:
    """A reporter's "the kernel wrote:" followed by a pasted log is not mistaken for history."""
    text = "Hi,\nsince the upgrade db-2 wrote:\nOut of memory: Killed process 1234 (java)"
    assert strip_quoted(text) == text


def test_stripping_everything_falls_back_to_the_full_text() -> None:
    """When nothing new remains (a bare forward), new_text is the whole text."""
    text = "> Only quoted lines\n> nothing else"
    assert strip_quoted(text) == text


# --- attachments ----------------------------------------------------------------------------


def test_attachments_are_listed_but_not_in_text() -> None:
    """Attachments come back with filename, type and decoded size, and stay out of the text."""
    msg = human_mail("Log attached.")
    msg.add_attachment(
        b"\x89PNG" + bytes(96), maintype="image", subtype="png", filename="graph.png"
    )
    msg.add_attachment("ERROR db timeout\n" * 10, filename="app.log")
    forwarded = human_mail("the original")
    msg.add_attachment(forwarded)
    mail = parse_mail(msg.as_bytes())
    assert mail.text == "Log attached."
    listed = [(a.filename, a.content_type, a.size) for a in mail.attachments]
    assert listed[:2] == [("graph.png", "image/png", 100), ("app.log", "text/plain", 170)]
    assert listed[2][:2] == (None, "message/rfc822") and listed[2][2] > 0


def test_inline_images_of_an_html_alternative_are_attachments() -> None:
    """Images in the HTML rendering's multipart/related are listed; the HTML text is not."""
    msg = human_mail("Plain text wins.")
    msg.add_alternative("<p>HTML <img src='cid:logo'></p>", subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None
    html_part.add_related(b"GIF89a", maintype="image", subtype="gif", cid="<logo>")
    mail = parse_mail(msg.as_bytes())
    assert mail.text == "Plain text wins."
    assert [a.content_type for a in mail.attachments] == ["image/gif"]


def test_multipart_with_an_unfolded_boundary_line_is_recovered() -> None:
    """A boundary parameter on an unindented line (a known client bug) is recovered."""
    raw = raw_mail(
        b"--b1\nContent-Type: text/plain\n\nPlain body\n"
        b"--b1\nContent-Type: text/html\n\n<p>HTML body</p>\n--b1--\n",
        b"Content-Type: multipart/alternative;",
        b'boundary="b1"',
    )
    mail = parse_mail(raw)
    assert (mail.text, mail.attachments) == ("Plain body", ())


def test_multipart_without_its_boundary_keeps_the_raw_text() -> None:
    """A multipart whose boundary never appears still yields its text rather than nothing."""
    mail = parse_mail(raw_mail(b"Server down!\n", b"Content-Type: multipart/mixed; boundary=nope"))
    assert "Server down!" in mail.text


# --- unusable input -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\n\n\n", b"   \r\n", b"\x00\x01\x02"])
def test_empty_input_is_unparseable(raw: bytes) -> None:
    """Bytes with neither headers nor any body text raise UnparseableMessage."""
    with pytest.raises(UnparseableMessage):
        parse_mail(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00garbage\x80\x81",
        b"no headers, just words",
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Transfer-Encoding: base64\n\n!",
        b"Content-Type: text/plain; charset*=bogus''%ff%fe\n\nx",
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        + b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" * 300,
        b"Subject: " + b"=?utf-8?q?a?= " * 20000 + b"\n\nx",
        b"From: " + b'"' * 50000 + b"\n\nx",
    ],
)
def test_garbage_gives_a_parsed_mail_or_unparseable(raw: bytes) -> None:
    """Garbage, broken MIME and absurd headers degrade; only UnparseableMessage may escape."""
    with contextlib.suppress(UnparseableMessage):
        assert isinstance(parse_mail(raw), ParsedMail)


@pytest.mark.parametrize(
    "content_type",
    [
        b"multipart/mixed; charset=idna",
        b'multipart/mixed; charset="a\x00b"',
        b"text/plain; charset*=idna''%ff",
        b"multipart/report; report-type*=idna''%ff; boundary=b",
    ],
)
def test_defective_parameters_degrade_a_part_not_the_message(content_type: bytes) -> None:
    """Parameters that make the stdlib raise cost at most that part's text, never the mail."""
    mail = parse_mail(raw_mail(b"--b\n\n\xff body\n", b"Content-Type: " + content_type))
    assert mail.subject == "Site down"


header_names = st.sampled_from(
    ["From", "To", "Reply-To", "Subject", "Date", "Message-ID", "References", "In-Reply-To",
     "Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "Return-Path",
     "Auto-Submitted", "X-Whatever"]
)  # fmt: skip
# Header-ish text: the characters and tokens that trip header parsers, plus any text at all.
HEADER_TOKENS = [*"abc@.<>()\"\\,;:=?*'% \t\r\n\x00é\udcff", "=?utf-8?q?", "=?x?b?", "?="]
header_text = st.one_of(
    st.lists(st.sampled_from(HEADER_TOKENS), max_size=20).map("".join), st.text(max_size=40)
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=400),
    headers=st.lists(st.tuples(header_names, header_text), max_size=8),
    body=st.binary(max_size=200),
)
def test_parse_mail_never_raises_anything_else(
    raw: bytes, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Arbitrary bytes and header-ish text give a ParsedMail or UnparseableMessage, nothing else."""
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    for candidate in (raw, head.encode("utf-8", "surrogateescape") + b"\n" + body):
        try:
            mail = parse_mail(candidate)
        except UnparseableMessage:
            continue
        assert isinstance(mail, ParsedMail)
        assert all("\n" not in v and "\r" not in v for v in (mail.subject, *mail.headers.values()))


# --- automatic mail -------------------------------------------------------------------------

AUTOMATIC_SIGNALS = [
    pytest.param(b"Auto-Submitted: auto-replied", None, "Auto-Submitted", id="auto-submitted"),
    pytest.param(
        b"Auto-Submitted: auto-generated (monitor)", None, "Auto-Submitted", id="auto-generated"
    ),
    pytest.param(b"", "", "null return path", id="null-envelope"),
    pytest.param(b"Return-Path: <>", None, "null return path", id="null-return-path-header"),
    pytest.param(b"", "MAILER-DAEMON@mx.example", "MAILER-DAEMON", id="daemon-envelope"),
    pytest.param(b"", "postmaster@mx.example", "POSTMASTER", id="postmaster-envelope"),
    pytest.param(b"Precedence: auto_reply", None, "Precedence: auto_reply", id="precedence-auto"),
    pytest.param(b"X-Auto-Response-Suppress: All", None, "X-Auto-Response-Suppress", id="xars-all"),
    pytest.param(b"X-Auto-Response-Suppress: OOF, DR", None, "X-Auto-Response", id="xars-oof"),
    pytest.param(b"X-Autoreply: yes", None, "X-Autoreply", id="x-autoreply"),
    pytest.param(b"X-Autorespond: yes", None, "X-Autorespond", id="x-autorespond"),
    pytest.param(b"X-Auto-Reply-From: a@x", None, "X-Auto-Reply-From", id="x-auto-reply-from"),
    pytest.param(b"X-Mail-Autoreply: yes", None, "X-Mail-Autoreply", id="x-mail-autoreply"),
    pytest.param(b"X-Failed-Recipients: bob@x", None, "X-Failed-Recipients", id="exim-failed"),
    pytest.param(b"X-Chatops-Loop: gw.example", None, "our own loop header", id="loop"),
]  # fmt: skip


# What a list or group writes on every post is no sign of software (the emergency address
# may be a Google Group): with only these, mail from a person stays a report.
LIST_ONLY = [
    pytest.param(b"", "owner-ops@lists.example", id="list-owner-envelope"),
    pytest.param(b"", "ops-bounces@lists.example", id="mailman-bounces-envelope"),
    pytest.param(b"", "emergency+bncBDX7@paas.example", id="google-bnc-envelope"),
    pytest.param(b"Precedence: bulk", None, id="precedence-bulk"),
    pytest.param(b"Precedence: junk", None, id="precedence-junk"),
    pytest.param(b"Precedence: list", None, id="precedence-list"),
    pytest.param(b"List-Id: <ops.lists.example>", None, id="list-id"),
    pytest.param(b"List-Unsubscribe: <mailto:u@x>", None, id="list-unsub"),
    pytest.param(b"List-Post: <mailto:ops@x>", None, id="list-post"),
    pytest.param(b"Mailing-List: contact ops-help@x", None, id="ezmlm"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "envelope"), LIST_ONLY)
def test_list_headers_alone_do_not_make_mail_automatic(extra: bytes, envelope: str | None) -> None:
    """Precedence and List-* headers, or a list's envelope, leave a person's report a report."""
    mail = parse_mail(raw_mail(b"All our apps return 503 since 09:50.", extra), envelope)
    assert mail.automatic is None


@pytest.mark.parametrize(("extra", "envelope", "reason"), AUTOMATIC_SIGNALS)
def test_each_automatic_header_signal(extra: bytes, envelope: str | None, reason: str) -> None:
    """Each RFC 3834 / vendor signal on an otherwise human mail marks it automatic, saying why."""
    mail = parse_mail(raw_mail(b"I am away until Monday.", extra), envelope)
    assert mail.automatic is not None
    assert reason in mail.automatic


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example>\n", "MAILER-DAEMON"),
        (b"From: mail-daemon@mx.example\n", "MAIL-DAEMON"),
        (b"From: post_master@carrier.example\n", "POST_MASTER"),
        (b"From: MAILER-DAEMON <>\n", "null From address"),
        (b"From: a@x.example\nSubject: Undeliverable: Site down\n", "automatic subject"),
        (b"From: a@x.example\nSubject: Mail delivery failed: returning message\n", "subject"),
        (b"From: a@x.example\nSubject: Automatic reply: Site down\n", "automatic subject"),
        (b"From: a@x.example\nSubject: Abwesenheitsnotiz: Ausfall\n", "automatic subject"),
        (b"From: a@x.example\nSubject: Out of Office: Site down\n", "automatic subject"),
    ],
)
def test_sender_and_subject_signals(headers: bytes, reason: str) -> None:
    """Mail-system senders, a null From and bounce/vacation subjects mark mail automatic."""
    mail = parse_mail(raw_mail(b"Your message could not be delivered.", headers=headers))
    assert mail.automatic is not None and reason in mail.automatic


def _report(content_type: str, status_type: str) -> bytes:
    """A bounce-like message: a human-readable part and a machine-readable status part."""
    return (
        b"From: Mail System <bounces@mx.example>\nSubject: Notification\nMIME-Version: 1.0\n"
        + f'Content-Type: {content_type}; boundary="b1"\n\n'.encode()
        + b"--b1\nContent-Type: text/plain\n\nSee the attached report.\n"
        + f"--b1\nContent-Type: {status_type}\n\n".encode()
        + b"Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@x\nAction: failed\n"
        + b"--b1--\n"
    )


@pytest.mark.parametrize(
    ("report_type", "status_type", "reason"),
    [
        ("delivery-status", "message/delivery-status", "multipart/report; delivery-status"),
        ("feedback-report", "message/feedback-report", "multipart/report; feedback-report"),
        ("disposition-notification", "message/disposition-notification", "multipart/report"),
        ("", "message/delivery-status", "delivery status part (message/delivery-status)"),
    ],
)
def test_reports_are_automatic(report_type: str, status_type: str, reason: str) -> None:
    """multipart/report (DSN, ARF, MDN), or a status part inside multipart/mixed, is automatic."""
    content_type = (
        f"multipart/report; report-type={report_type}" if report_type else "multipart/mixed"
    )
    mail = parse_mail(_report(content_type, status_type))
    assert mail.automatic is not None and reason in mail.automatic


def test_top_level_delivery_status_is_automatic() -> None:
    """A message whose only part is message/delivery-status is automatic."""
    raw = raw_mail(
        b"Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@x\nAction: failed\n",
        b"Content-Type: message/delivery-status",
    )
    assert "message/delivery-status" in (parse_mail(raw).automatic or "")


@pytest.mark.parametrize(
    "extra",
    [
        b"Auto-Submitted: no",
        b"Auto-Submitted: No (sent by a person)",
        b"X-Auto-Response-Suppress: None",
        b"Precedence: first-class",
    ],
)
def test_human_mail_is_not_automatic(extra: bytes) -> None:
    """A person's mail, including one saying Auto-Submitted: no, is not automatic."""
    assert (
        parse_mail(raw_mail(b"Site down since 09:50.", extra), "alice@tenant.example").automatic
        is None
    )


def test_human_subject_mentioning_a_vacation_is_not_automatic() -> None:
    """A subject that merely mentions being out of office, or a bounce, is not automatic."""
    headers = b"From: a@x.example\nSubject: Re: out of office? Undeliverable mail to sales\n"
    assert parse_mail(raw_mail(b"Is the mail server down?", headers=headers)).automatic is None


def test_envelope_sender_overrides_return_path_header() -> None:
    """A known envelope sender is trusted over a Return-Path header a sender could forge."""
    raw = raw_mail(b"Site down.", b"Return-Path: <>")
    assert parse_mail(raw, "alice@tenant.example").automatic is None
    assert parse_mail(raw, None).automatic == "null return path"


def test_custom_loop_header_is_recognised() -> None:
    """The loop header name is configurable."""
    raw = raw_mail(b"x", b"X-Our-Gateway: 1")
    assert parse_mail(raw, loop_header="X-Our-Gateway").automatic == "our own loop header"
    assert parse_mail(raw).automatic is None


def test_automatic_reason_works_on_a_built_message() -> None:
    """automatic_reason accepts an EmailMessage directly."""
    msg = human_mail()
    assert automatic_reason(msg, "alice@tenant.example") is None
    msg["Auto-Submitted"] = "auto-replied"
    assert automatic_reason(msg, "alice@tenant.example") == "Auto-Submitted: auto-replied"
