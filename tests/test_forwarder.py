"""Trust through a forwarder: a real ARC chain (dkimpy, a key made here, DNS answered from
it), a forwarder's own Authentication-Results, and the configuration that names them."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim
import pytest

from gateway.config.model import ConfigError, parse_config
from gateway.plan.forwarder import Forwarder, forwarder_judge, judge_results, read_results
from gateway.plan.trust import TrustPolicy, judge_email

FIXTURE = Path(__file__).parent / "fixtures" / "groupmail" / "gg-rewritten-p1.eml"
GOOGLE = Forwarder("emergency-group", "mx.google.com", "emergency.paas.example", "google.com")
AUTHOR = "ana.silva@tenant.example"


@pytest.fixture(scope="module")
def google_key() -> tuple[bytes, bytes]:
    """A fresh RSA key standing in for Google's ARC key, and its DNS TXT record."""
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


def group_copy(
    results: str = "dkim=pass header.i=@tenant.example; spf=pass "
    "smtp.mailfrom=ana.silva@tenant.example; dmarc=pass (p=REJECT) "
    "header.from=tenant.example",
) -> bytes:
    """The fixture without its placeholder ARC set, with the results Google recorded."""
    lines = FIXTURE.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
    kept, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.lower().startswith(b"arc-")
        if not skipping:
            kept.append(line)
    body = b"\r\n".join(kept)
    return f"Authentication-Results: mx.google.com; {results}\r\n".encode() + body


def sealed(private: bytes, raw: bytes, domain: bytes = b"google.com") -> bytes:
    """The message sealed as the forwarder would (ARC set i=1 by `domain`)."""
    headers = dkim.arc_sign(
        raw,
        b"arc-20160816",
        domain,
        private,
        b"mx.google.com",
        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"],
    )
    return b"".join(headers) + raw


def judge(record: bytes, forwarders: tuple[Forwarder, ...] = (GOOGLE,)):
    lookup = {b"arc-20160816._domainkey.google.com.": record}
    return forwarder_judge(forwarders, lookup=lookup.get)


def test_a_verified_arc_seal_of_the_named_forwarder_vouches_for_the_author(
    google_key: tuple[bytes, bytes],
) -> None:
    """Google's sealed DMARC pass for tenant.example makes the author authentic and, on the
    allow-list, trusted — though SPF and DKIM now name the group."""
    private, record = google_key
    raw = sealed(private, group_copy())
    found = judge(record)(raw, AUTHOR)
    assert found == (
        True,
        "DMARC pass for tenant.example recorded by emergency-group (ARC, mx.google.com)",
    )
    policy = TrustPolicy(
        authserv_id="mx.gw.example",
        allow_domains=frozenset({"tenant.example"}),
        forwarded=judge(record),
    )
    verdict = judge_email(raw, AUTHOR, policy)
    assert verdict.trusted and verdict.authentic


def test_a_tampered_sealed_message_or_an_unnamed_signer_does_not_count(
    google_key: tuple[bytes, bytes],
) -> None:
    """A changed subject breaks the chain; a chain sealed by someone else is not the
    forwarder's; either way the author behind the group is not authentic."""
    private, record = google_key
    raw = sealed(private, group_copy())
    tampered = raw.replace(b"Subject: URGENT", b"Subject: Call +1 900 555 0100 URGENT")
    authentic, why = judge(record)(tampered, AUTHOR) or (None, "")
    assert authentic is False and "claims to come through emergency-group" in why
    by_other = sealed(private, group_copy(), domain=b"evil.example")
    lookup = {b"arc-20160816._domainkey.evil.example.": record}
    authentic, why = forwarder_judge((GOOGLE,), lookup=lookup.get)(by_other, AUTHOR) or (None, "")
    assert authentic is False and "claims to come through emergency-group" in why


def test_the_forwarders_recorded_failure_and_a_different_author_are_not_authentic(
    google_key: tuple[bytes, bytes],
) -> None:
    """Google recorded DMARC fail: not authentic. Google recorded a pass for the sender's
    own domain, but the headers name a tenant as author: not authentic either."""
    private, record = google_key
    failed = sealed(private, group_copy("dmarc=fail (p=REJECT) header.from=tenant.example"))
    assert judge(record)(failed, AUTHOR) == (
        False,
        "DMARC fail for tenant.example recorded by emergency-group (ARC, mx.google.com)",
    )
    other = sealed(
        private, group_copy("dkim=pass header.d=evil.example; dmarc=pass header.from=evil.example")
    )
    authentic, why = judge(record)(other, AUTHOR) or (None, "")
    assert authentic is False and "no pass aligned with tenant.example" in why


def test_results_written_by_the_sender_are_not_the_forwarders() -> None:
    """Without a verified seal or signature, a copy of Google's header proves nothing."""
    raw = group_copy()  # Authentication-Results: mx.google.com ..., no ARC, no signature
    authentic, why = forwarder_judge((GOOGLE,), lookup=lambda name: None)(raw, AUTHOR) or (None, "")
    assert authentic is False and "claims to come through emergency-group" in why


def test_authentication_results_are_read_by_authres_quoted_semicolons_included() -> None:
    """A quoted ';' inside a property does not split the header (RFC 8601 via authres)."""
    parsed = read_results(
        'i=1; mx.google.com; spf=pass smtp.mailfrom="x;dmarc=pass ."'
        "@evil.example; dmarc=fail header.from=tenant.example"
    )
    assert parsed is not None
    authserv, results = parsed
    assert authserv == "mx.google.com"
    assert [(r.method, r.result) for r in results] == [("spf", "pass"), ("dmarc", "fail")]
    assert read_results("not a header at all ;;; ===") is None


BASE = {"trust": {"trusted_authserv_id": "mx.gw.example", "allow_domains": ["tenant.example"]}}


def test_check_config_validates_forwarders() -> None:
    """A forwarder needs a List-Id or ARC signer, and a way to prove mail came from it."""
    good = {
        "name": "emergency-group",
        "list_id": "<Emergency.paas.example>",
        "arc_signer": "google.com",
        "authserv_id": "mx.google.com",
    }
    config = parse_config({**BASE, "trust": {**BASE["trust"], "forwarders": [good]}})
    assert config.trust.forwarders[0].list_id == "emergency.paas.example"
    bad = [
        {"name": "x", "authserv_id": "mx.google.com", "arc_signer": "google.com", "oops": 1},
        {"name": "x", "authserv_id": "mx.google.com"},
        {"name": "x", "list_id": "emergency.paas.example", "authserv_id": "mx.google.com"},
        {
            "name": "x",
            "list_id": "not a list id",
            "arc_signer": "google.com",
            "authserv_id": "mx.google.com",
        },
    ]
    for forwarder in bad:
        with pytest.raises(ConfigError):
            parse_config({**BASE, "trust": {**BASE["trust"], "forwarders": [forwarder]}})
    dkim_only = {
        "name": "list",
        "list_id": "ops.lists.example",
        "dkim_domain": "lists.example",
        "authserv_id": "lists.example",
    }
    with pytest.raises(ConfigError, match="dkim_domain"):
        parse_config({"trust": {"forwarders": [dkim_only]}})
    assert parse_config({"trust": {"verify_dkim": True, "forwarders": [dkim_only]}})
    with pytest.raises(ConfigError, match="same name"):
        parse_config({**BASE, "trust": {**BASE["trust"], "forwarders": [good, good]}})
    with pytest.raises(ConfigError):
        parse_config({"answers": {"per_address": 0}})


def test_forwarder_results_align_by_organisational_domain() -> None:
    """A pass a forwarder recorded vouches only within the author's organisational domain:
    `github.io` (a public suffix) vouches for nobody under it, `mail.tenant.example` for
    `eu.tenant.example`; and a `;` inside a quoted string starts no new result."""
    _, hosted = read_results("groups.example; dkim=pass header.d=github.io") or ("", [])
    assert judge_results(hosted, "ana@tenant.github.io", "the group")[0] is False
    _, sibling = read_results("groups.example; dkim=pass header.d=mail.tenant.example") or ("", [])
    assert judge_results(sibling, "ana@eu.tenant.example", "the group")[0] is True
    _, quoted = read_results(
        'groups.example; spf=pass smtp.mailfrom="x;dmarc=pass ."'
        "@attacker.example; dmarc=fail header.from=tenant.example"
    ) or ("", [])
    assert judge_results(quoted, "ana@tenant.example", "the group")[0] is False
