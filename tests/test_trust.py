"""Sender trust (Authentication-Results, DKIM, allow-list) and signed thread tokens: pure."""

from __future__ import annotations

import base64
import subprocess

import dkim
import pytest

from gateway.config.model import ConfigError, parse_config
from gateway.parse.dkim_check import dkim_verifier
from gateway.plan.tokens import ThreadSigner
from gateway.plan.trust import (
    TrustPolicy,
    is_known,
    judge_chat,
    judge_email,
    parse_authentication_results,
)
from tests.conftest import email_bytes

MTA = "mx.gw.example"
POLICY = TrustPolicy(authserv_id=MTA, allow_domains=frozenset({"tenant.example"}))


def with_ar(*values: str, sender: str = "alice@tenant.example") -> bytes:
    raw = email_bytes(sender=sender)
    return b"".join(f"Authentication-Results: {v}\r\n".encode() for v in values) + raw


def test_parse_authentication_results_reads_methods_properties_and_skips_comments() -> None:
    """RFC 8601 syntax: authserv-id with version, comments, several methods and ptypes."""
    server, results = parse_authentication_results(
        "MX.gw.example 1; dkim=pass (good sig) header.d=tenant.example header.s=s1;"
        " spf=fail smtp.mailfrom=x@y.example; dmarc=pass (p=reject) header.from=tenant.example"
    )
    assert server == "mx.gw.example"
    assert [(r.method, r.result) for r in results] == [
        ("dkim", "pass"),
        ("spf", "fail"),
        ("dmarc", "pass"),
    ]
    assert results[0].properties == {"header.d": "tenant.example", "header.s": "s1"}


def test_trusted_pass_from_allow_listed_sender_is_trusted() -> None:
    """Our MTA says DMARC pass, the domain is allow-listed: the sender may page."""
    verdict = judge_email(
        with_ar(f"{MTA}; dmarc=pass header.from=tenant.example"), "alice@tenant.example", POLICY
    )
    assert verdict.trusted and verdict.authentic and verdict.known
    assert "DMARC pass" in verdict.reasons


def test_forged_authentication_results_from_another_authserv_id_are_ignored() -> None:
    """A pass written by the sender (another authserv-id) counts for nothing."""
    raw = with_ar(
        "mx.evil.example; dmarc=pass header.from=tenant.example; dkim=pass header.d=tenant.example"
    )
    verdict = judge_email(raw, "alice@tenant.example", POLICY)
    assert not verdict.trusted and verdict.authentic is False
    assert any("no Authentication-Results from mx.gw.example" in r for r in verdict.reasons)


def test_only_the_topmost_header_of_the_trusted_mta_counts() -> None:
    """A forged copy below our MTA's own header (claiming our id) does not override it."""
    raw = with_ar(
        f"{MTA}; dmarc=fail header.from=tenant.example",
        f"{MTA}; dmarc=pass header.from=tenant.example",
    )
    verdict = judge_email(raw, "alice@tenant.example", POLICY)
    assert verdict.authentic is False and not verdict.trusted


def test_unaligned_dkim_pass_does_not_authenticate_the_from_domain() -> None:
    """DKIM pass for another domain, SPF pass for another domain: not authentic."""
    raw = with_ar(f"{MTA}; dkim=pass header.d=bulk.example; spf=pass smtp.mailfrom=a@bulk.example")
    verdict = judge_email(raw, "alice@tenant.example", POLICY)
    assert verdict.authentic is False
    aligned = with_ar(f"{MTA}; dkim=pass header.d=tenant.example")
    assert judge_email(aligned, "alice@tenant.example", POLICY).trusted


def test_authentic_but_unknown_sender_is_not_trusted() -> None:
    """A genuine mail from a domain not on the allow-list never pages alone."""
    raw = with_ar(f"{MTA}; dmarc=pass header.from=other.example", sender="bob@other.example")
    verdict = judge_email(raw, "bob@other.example", POLICY)
    assert verdict.authentic and not verdict.known and not verdict.trusted


def test_without_checks_the_allow_list_decides_and_empty_means_nobody() -> None:
    """No MTA, no DKIM: authenticity is unknown; the default (empty) allow-list trusts nobody."""
    raw = email_bytes()
    assert not judge_email(raw, "alice@tenant.example", TrustPolicy()).trusted
    listed = TrustPolicy(allow_addresses=frozenset({"alice@tenant.example"}))
    verdict = judge_email(raw, "alice@tenant.example", listed)
    assert verdict.trusted and verdict.authentic is None
    assert judge_email(raw, "x@anything.example", TrustPolicy(allow_all=True)).trusted


def test_allow_list_matches_exact_domains_addresses_and_chat_servers() -> None:
    """Exact domains only (no suffix tricks); chat users by id, or by the server the chat
    adapter says authenticated them."""
    policy = TrustPolicy(
        allow_domains=frozenset({"tenant.example"}), allow_addresses=frozenset({"@ops:hs.example"})
    )
    assert is_known("Alice@Tenant.Example", policy)
    assert not is_known("alice@eviltenant.example", policy)
    assert not is_known("alice@tenant.example.evil", policy)
    assert judge_chat("@ops:hs.example", policy).trusted
    assert not judge_chat("@someone:hs.example", policy).trusted
    assert judge_chat("@bob:tenant.example", policy, "tenant.example").trusted
    assert not judge_chat("@bob:tenant.example", policy).trusted  # no server named


def test_an_address_shaped_like_a_chat_id_is_not_known_by_its_server_part() -> None:
    """Only a chat adapter names a chat user's server: a sender (say an email From) that
    merely looks like "@bob:tenant.example" is not on the allow-list by that server."""
    policy = TrustPolicy(allow_domains=frozenset({"tenant.example"}))
    assert not is_known("@bob:tenant.example", policy)
    assert not judge_chat("@bob:tenant.example", policy, None).trusted


# --- DKIM, with a key made here and a DNS lookup answered from it -------------------------


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    """A fresh RSA key (openssl, PKCS#1 as dkimpy reads it) and its DNS TXT record."""
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
    private: bytes, domain: str = "tenant.example", sender: str = "alice@tenant.example"
) -> bytes:
    raw = email_bytes(sender=sender).replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    sig = dkim.sign(
        raw,
        b"s1",
        domain.encode(),
        private,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return sig + raw


def test_dkim_signature_verifies_with_injected_dns(dkim_key: tuple[bytes, bytes]) -> None:
    """A valid signature from the From domain makes the sender authentic and trusted."""
    private, record = dkim_key
    lookups: list[bytes] = []

    def lookup(name: bytes) -> bytes | None:
        lookups.append(name)
        return record if name == b"s1._domainkey.tenant.example." else None

    policy = TrustPolicy(allow_domains=frozenset({"tenant.example"}), dkim=dkim_verifier(lookup))
    verdict = judge_email(signed(private), "alice@tenant.example", policy)
    assert verdict.trusted and verdict.authentic, verdict.reasons
    assert lookups == [b"s1._domainkey.tenant.example."]


def test_dkim_tampered_body_or_unaligned_domain_is_not_authentic(
    dkim_key: tuple[bytes, bytes],
) -> None:
    """A changed body fails; a valid signature by another domain does not vouch for From."""
    private, record = dkim_key
    policy = TrustPolicy(
        allow_domains=frozenset({"tenant.example"}), dkim=dkim_verifier(lambda name: record)
    )
    tampered = signed(private).replace(b"return 502", b"return 503")
    assert judge_email(tampered, "alice@tenant.example", policy).authentic is False
    other = signed(private, domain="bulk.example")
    assert judge_email(other, "alice@tenant.example", policy).authentic is False
    assert judge_email(email_bytes(), "alice@tenant.example", policy).authentic is False


# --- thread tokens ------------------------------------------------------------------------

SIGNER = ThreadSigner(b"0123456789abcdef-key", "gw.example")


def test_issued_message_id_verifies_to_its_incident() -> None:
    """Our id names its incident; it is unique per label and survives case changes."""
    mid = SIGNER.message_id(42, "ack.7")
    assert mid.startswith("<inc42.ack.7.") and mid.endswith("@gw.example>")
    assert SIGNER.verify(mid) == 42 and SIGNER.verify(mid.upper()) == 42
    assert SIGNER.message_id(42, "ack.8") != mid


def test_token_verification_rejects_tampering_and_other_keys() -> None:
    """Another incident number, label, tag, domain or key: not ours."""
    mid = SIGNER.message_id(42, "ack.7")
    tag = mid.split(".")[3].split("@")[0]
    assert SIGNER.verify(mid.replace("inc42", "inc43")) is None
    assert SIGNER.verify(mid.replace("ack.7", "ack.8")) is None
    assert SIGNER.verify(mid.replace(tag, "a" * 26)) is None
    assert SIGNER.verify(mid.replace("gw.example", "evil.example")) is None
    assert ThreadSigner(b"another-key-0123456789", "gw.example").verify(mid) is None
    assert SIGNER.verify("<inc-42.7.ack@gw.example>") is None  # the old, guessable form
    assert SIGNER.issued(("<x@y>", mid, SIGNER.message_id(3, "u"))) == (42, 3)


def test_a_short_key_is_refused() -> None:
    """A key an attacker could brute-force is a configuration error, not a weak default."""
    with pytest.raises(ValueError, match="at least 16 bytes"):
        ThreadSigner(b"short", "gw.example")


def test_config_requires_a_threading_key_with_a_relay_and_checks_the_allow_list() -> None:
    """Mail through a relay needs a configured key; errors name their TOML path."""
    relay = {"mode": "smtp", "smtp": {"host": "127.0.0.1"}}
    with pytest.raises(ConfigError) as caught:
        parse_config({"mail_out": relay, "trust": {"allow_addresses": ["not an address"]}})
    text = "\n".join(caught.value.errors)
    assert "trust.allow_addresses[0]" in text
    with pytest.raises(ConfigError, match=r"threading\.key: required"):
        parse_config({"mail_out": relay})
    config = parse_config(
        {
            "mail_out": relay,
            "threading": {"key": {"value": "k" * 32}},
            "trust": {"allow_domains": ["Tenant.Example"]},
        }
    )
    assert config.trust.allow_domains == ["tenant.example"]
