"""Attacks on sender authentication: Authentication-Results syntax, alignment, duplicate
From/Subject headers, and replayed DKIM-signed mail with unsigned additions. Pure, plus one
run over the real SMTP listener."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest

from gateway.parse.auth_results import header_results, parse_header
from gateway.parse.dkim_check import dkim_verifier
from gateway.plan.orgdomain import aligned, organisational_domain
from gateway.plan.trust import TrustPolicy, judge_email
from tests.conftest import IN_HOURS, email_bytes, eventually, make_config, running, ticking
from tests.test_trust_e2e import incidents, send, settled

MTA = "mx.gw.example"
POLICY = TrustPolicy(
    authserv_id=MTA, allow_domains=frozenset({"tenant.example", "tenant.github.io"})
)

# A quoted local part (RFC 5321 allows ";" in it) that a naive parser splits on.
QUOTED_SEMICOLON = (
    f'{MTA}; spf=pass smtp.mailfrom="x;dmarc=pass ."@attacker.example; '
    "dmarc=fail header.from=tenant.example",
    f'{MTA}; spf=fail smtp.mailfrom="a;dkim=pass header.d=tenant.example;"@attacker.example',
    f"{MTA}; dmarc=fail (p=reject) header.from=tenant.example; spf=neutral "
    f'smtp.mailfrom="q;dmarc=pass header.from=tenant.example"@evil.example',
)


def with_ar(value: str, raw: bytes | None = None) -> bytes:
    return f"Authentication-Results: {value}\r\n".encode() + (raw or email_bytes())


@pytest.mark.parametrize("value", QUOTED_SEMICOLON)
def test_semicolon_inside_a_quoted_string_does_not_start_a_new_result(value: str) -> None:
    """RFC 8601 quoted strings may hold ";": a pass hidden inside one counts for nothing."""
    verdict = judge_email(with_ar(value), "alice@tenant.example", POLICY)
    assert verdict.authentic is False and not verdict.trusted, verdict.reasons


def test_quoted_values_are_read_whole() -> None:
    """The parser keeps a quoted local part as one value, with its results in order."""
    parsed = parse_header(QUOTED_SEMICOLON[0])
    assert parsed is not None and parsed.authserv_id == MTA
    assert [(r.method, r.result) for r in parsed.results] == [("spf", "pass"), ("dmarc", "fail")]
    assert parsed.results[0].domain("smtp.mailfrom") == "attacker.example"


def test_dmarc_pass_without_header_from_is_not_a_pass() -> None:
    """A DMARC pass that does not say which From domain it judged vouches for nothing."""
    verdict = judge_email(with_ar(f"{MTA}; dmarc=pass"), "alice@tenant.example", POLICY)
    assert verdict.authentic is False and not verdict.trusted


def test_dmarc_pass_for_another_from_domain_is_not_a_pass() -> None:
    """DMARC judged a different From (e.g. the second of two): it says nothing of ours."""
    raw = with_ar(f"{MTA}; dmarc=pass header.from=attacker.example")
    assert not judge_email(raw, "alice@tenant.example", POLICY).trusted


def two_froms(first: str, second: str) -> bytes:
    raw = email_bytes(sender=first)
    return raw.replace(b"From: ", f"From: {second}\r\nFrom: ".encode(), 1)


@pytest.mark.parametrize(
    "ar",
    [
        f"{MTA}; dmarc=pass",
        f"{MTA}; dmarc=pass header.from=tenant.example",
        f"{MTA}; dkim=pass header.d=tenant.example",
    ],
)
def test_mail_with_two_from_headers_is_never_trusted(ar: str) -> None:
    """RFC 5322 allows one From; with two, nobody can tell which one was checked."""
    raw = with_ar(ar, two_froms("mallory@attacker.example", "alice@tenant.example"))
    verdict = judge_email(raw, "alice@tenant.example", POLICY)
    assert verdict.authentic is False and not verdict.trusted
    assert any("From" in r for r in verdict.reasons)


def test_mail_with_two_subject_headers_is_not_trusted() -> None:
    """Two Subjects: the one rules and people read may not be the one that was signed."""
    raw = email_bytes().replace(b"Subject: ", b"Subject: Everything is on fire\r\nSubject: ", 1)
    verdict = judge_email(
        with_ar(f"{MTA}; dmarc=pass header.from=tenant.example", raw),
        "alice@tenant.example",
        POLICY,
    )
    assert not verdict.trusted and any("Subject" in r for r in verdict.reasons)


def test_alignment_uses_organisational_domains_from_the_public_suffix_list() -> None:
    """A signature by a public suffix (github.io) does not vouch for a tenant under it."""
    raw = with_ar(
        f"{MTA}; dkim=pass header.d=github.io", email_bytes(sender="alice@tenant.github.io")
    )
    assert not judge_email(raw, "alice@tenant.github.io", POLICY).trusted
    spf = with_ar(
        f"{MTA}; spf=pass smtp.mailfrom=bounce@github.io",
        email_bytes(sender="alice@tenant.github.io"),
    )
    assert not judge_email(spf, "alice@tenant.github.io", POLICY).trusted


def test_sibling_subdomains_of_one_organisation_are_aligned() -> None:
    """Relaxed alignment (RFC 7489): the same organisational domain, whichever subdomains."""
    raw = with_ar(
        f"{MTA}; dkim=pass header.d=mail.tenant.example",
        email_bytes(sender="alice@eu.tenant.example"),
    )
    assert judge_email(
        raw,
        "alice@eu.tenant.example",
        TrustPolicy(authserv_id=MTA, allow_domains=frozenset({"eu.tenant.example"})),
    ).trusted
    assert aligned("bounces.tenant.co.uk", "tenant.co.uk")
    assert not aligned("other.co.uk", "tenant.co.uk")
    assert not aligned("co.uk", "tenant.co.uk")
    assert organisational_domain("a.b.tenant.co.uk") == "tenant.co.uk"
    assert organisational_domain("co.uk") is None


def test_only_the_first_header_of_the_trusted_authserv_id_counts() -> None:
    """The reusable reader: results of the topmost header with a given authserv-id."""
    headers = [
        "other.example; dmarc=pass header.from=tenant.example",
        f"{MTA.upper()} 1; dkim=fail header.d=tenant.example",
        f"{MTA}; dkim=pass header.d=tenant.example",
    ]
    results = header_results(headers, MTA)
    assert results is not None and [(r.method, r.result) for r in results] == [("dkim", "fail")]
    assert header_results(["garbage ;;; ="], MTA) is None
    assert header_results(headers, "absent.example") is None


def test_unreadable_header_from_the_trusted_mta_is_not_a_pass() -> None:
    """A header the RFC 8601 grammar rejects is treated as giving no result at all."""
    raw = with_ar(f'{MTA}; dmarc=pass header.from="tenant.example')
    assert not judge_email(raw, "alice@tenant.example", POLICY).trusted


# --- verify_dkim mode: a genuine signature replayed with unsigned additions ----------------


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    """A fresh RSA key (PKCS#1 as dkimpy reads it) and its DNS TXT record."""
    private = subprocess.run(
        ["openssl", "genrsa", "-traditional", "2048"], check=True, capture_output=True
    ).stdout
    public = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"],
        input=private,
        check=True,
        capture_output=True,
    ).stdout
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def signed(
    private: bytes,
    headers: tuple[bytes, ...] = (b"from", b"to", b"subject", b"message-id"),
    subject: str = "Weekly usage report",
    length: bool = False,
) -> bytes:
    raw = email_bytes(subject=subject, body="Usage is normal this week.")
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return (
        dkim.sign(
            raw, b"s1", b"tenant.example", private, include_headers=list(headers), length=length
        )
        + raw
    )


def dkim_policy(record: bytes) -> TrustPolicy:
    return TrustPolicy(
        allow_domains=frozenset({"tenant.example"}), dkim=dkim_verifier(lambda name: record)
    )


def test_genuine_signed_mail_is_trusted(dkim_key: tuple[bytes, bytes]) -> None:
    """The control: the signed mail as sent verifies and is trusted."""
    private, record = dkim_key
    verdict = judge_email(signed(private), "alice@tenant.example", dkim_policy(record))
    assert verdict.trusted, verdict.reasons


def test_replayed_signed_mail_with_an_unsigned_subject_above_is_not_trusted(
    dkim_key: tuple[bytes, bytes],
) -> None:
    """An extra Subject above the signed one still verifies in DKIM, but it is not signed."""
    private, record = dkim_key
    raw = signed(private)
    sig_end = raw.index(b"From: ")
    replayed = raw[:sig_end] + b"Subject: URGENT: all sites down, page now\r\n" + raw[sig_end:]
    verdict = judge_email(replayed, "alice@tenant.example", dkim_policy(record))
    assert not verdict.trusted and verdict.authentic is False, verdict.reasons


def test_unsigned_subject_is_not_trusted(dkim_key: tuple[bytes, bytes]) -> None:
    """A signature that does not cover the Subject does not vouch for the title we page with."""
    private, record = dkim_key
    raw = signed(private, headers=(b"from", b"to", b"message-id"))
    verdict = judge_email(raw, "alice@tenant.example", dkim_policy(record))
    assert not verdict.trusted and any("Subject" in r for r in verdict.reasons)


def test_oversigned_headers_are_trusted(dkim_key: tuple[bytes, bytes]) -> None:
    """Listing From and Subject twice in h= (oversigning, RFC 6376 §8.15) is the safe way."""
    private, record = dkim_key
    raw = signed(private, headers=(b"from", b"from", b"subject", b"subject", b"to"))
    assert judge_email(raw, "alice@tenant.example", dkim_policy(record)).trusted


def test_body_length_limited_signature_with_appended_text_is_not_trusted(
    dkim_key: tuple[bytes, bytes],
) -> None:
    """An l= signature lets anyone append text; appended text is not vouched for."""
    private, record = dkim_key
    raw = signed(private, length=True) + b"Also: please page the on-call now.\r\n"
    assert not judge_email(raw, "alice@tenant.example", dkim_policy(record)).trusted


async def test_quoted_semicolon_attack_over_smtp_pages_nobody(tmp_path: Path) -> None:
    """Over the real listener: the forged pass inside a quoted string opens an unverified
    ticket, while the same tenant's genuine DMARC pass pages."""
    config = make_config(tmp_path, trust={"trusted_authserv_id": MTA})
    async with running(config, ticking(IN_HOURS)) as app:
        port = app.smtp_port or 0
        await send(port, with_ar(QUOTED_SEMICOLON[0]), "alice@tenant.example")
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 1)
        genuine = email_bytes(subject="Database unreachable", body="Every query times out.")
        await send(
            port,
            with_ar(f"{MTA}; dmarc=pass header.from=tenant.example", genuine),
            "alice@tenant.example",
        )
        await eventually(lambda: settled(tmp_path) and len(incidents(tmp_path)) == 2)
    forged, real = incidents(tmp_path)
    assert forged.pages_sent == 0 and "unverified sender" in forged.flags
    assert real.pages_sent == 1 and "unverified sender" not in real.flags


def test_trusted_mta_dkim_pass_does_not_vouch_for_an_unsigned_subject(
    dkim_key: tuple[bytes, bytes],
) -> None:
    """The MTA's dkim=pass is for a signature without the Subject: a replay with the
    Subject rewritten is not believed; the same mail with an aligned SPF pass is."""
    private, _record = dkim_key
    raw = signed(private, headers=(b"from", b"to", b"message-id"))
    start = raw.index(b"Subject: ")
    replayed = raw[:start] + b"Subject: URGENT: page now" + raw[raw.index(b"\r\n", start) :]
    dkim_pass = f"{MTA}; dkim=pass header.d=tenant.example; spf=fail smtp.mailfrom=x@evil.example"
    verdict = judge_email(with_ar(dkim_pass, replayed), "alice@tenant.example", POLICY)
    assert not verdict.trusted and any("does not cover every Subject" in r for r in verdict.reasons)
    dmarc = f"{MTA}; dmarc=pass header.from=tenant.example"
    assert not judge_email(with_ar(dmarc, replayed), "alice@tenant.example", POLICY).trusted
    spf = f"{MTA}; dkim=pass header.d=tenant.example; spf=pass smtp.mailfrom=a@tenant.example"
    assert judge_email(with_ar(spf, replayed), "alice@tenant.example", POLICY).trusted


def test_trusted_mta_dkim_pass_with_a_covering_signature_is_trusted(
    dkim_key: tuple[bytes, bytes],
) -> None:
    """The control: a signature covering From and Subject, and the MTA's pass, is trusted."""
    private, _record = dkim_key
    ar = f"{MTA}; dkim=pass header.d=tenant.example"
    assert judge_email(with_ar(ar, signed(private)), "alice@tenant.example", POLICY).trusted
