"""The private parts of libraries (and of CPython's re) that the adapters and the rule
analysis rely on. Each is pinned below its next untested release in pyproject.toml; when a
pin is raised, this fails loudly if one of them is gone instead of the daemon failing in
production."""

from __future__ import annotations

import importlib
import inspect

import aiohttp.web_protocol
import aiohttp.web_server
import aioimaplib.aioimaplib as imap
import aiosmtpd.smtp
import pytest


def _assigned(cls: type, attribute: str) -> bool:
    """The class (or a base) sets `self.<attribute>` in its own code."""
    return any(
        f"self.{attribute}" in inspect.getsource(c)
        for c in cls.__mro__
        if c.__module__.startswith(cls.__module__.split(".")[0])
    )


@pytest.mark.parametrize(
    "method",
    [
        "_reset_timeout",
        "_timeout_cb",
        "_call_handler_hook",
        "_set_post_data_state",
        "_getaddr",
    ],
)
def test_aiosmtpd_methods_we_call_or_override(method: str) -> None:
    """adapters/smtp_intake.py pauses the idle timer, answers 421 and runs the DATA hook."""
    assert callable(getattr(aiosmtpd.smtp.SMTP, method, None)), method


@pytest.mark.parametrize(
    "attribute", ["_timeout_handle", "_handler_coroutine", "_smtp_methods", "_timeout_duration"]
)
def test_aiosmtpd_session_attributes(attribute: str) -> None:
    """The idle timer handle and duration, the session task (waited for at shutdown,
    cancelled past a budget) and the command table (junk commands counted) still exist."""
    assert _assigned(aiosmtpd.smtp.SMTP, attribute), attribute


def test_aioimaplib_parts_the_imap_adapter_relies_on() -> None:
    """EXISTS pushes are seen in _untagged_response; create_client is the connection hook;
    the client's helper tasks and IDLE waiter are what a dropped connection cancels."""
    assert callable(getattr(imap.IMAP4ClientProtocol, "_untagged_response", None))
    assert "self.create_client(" in inspect.getsource(imap.IMAP4.__init__)
    assert _assigned(imap.IMAP4, "_idle_waiter") and _assigned(imap.IMAP4, "tasks")
    assert _assigned(imap.IMAP4ClientProtocol, "tasks")


def test_aiohttp_server_counts_its_connections() -> None:
    """adapters/http_status.py serves the runner's low-level Server on its own listener and
    limits connections by Server.connections; idle connections are closed from their start
    by the keep-alive timer (aiohttp 3.14.5)."""
    assert isinstance(inspect.getattr_static(aiohttp.web_server.Server, "connections"), property)
    source = inspect.getsource(aiohttp.web_protocol.RequestHandler.connection_made)
    assert "_keepalive_handle" in source


@pytest.mark.parametrize(
    "name",
    [
        "ASSERT",
        "ASSERT_NOT",
        "AT",
        "AT_BEGINNING",
        "AT_BEGINNING_STRING",
        "AT_BOUNDARY",
        "AT_END",
        "AT_END_STRING",
        "BRANCH",
        "CATEGORY",
        "CATEGORY_NOT_WORD",
        "CATEGORY_SPACE",
        "CATEGORY_WORD",
        "IN",
        "LITERAL",
        "MAX_REPEAT",
        "MIN_REPEAT",
        "POSSESSIVE_REPEAT",
        "SUBPATTERN",
    ],
)
def test_re_constants_the_rule_analysis_reads(name: str) -> None:
    """rules/literals.py walks re._parser's output by these opcodes."""
    assert hasattr(importlib.import_module("re._constants"), name)


def test_re_parser_output_is_a_sequence_of_opcodes() -> None:
    """re._parser.parse still returns (opcode, argument) pairs."""
    parsed = importlib.import_module("re._parser").parse(r"site (down|up)\b")
    constants = importlib.import_module("re._constants")
    ops = [op for op, _ in parsed]
    assert ops[:2] == [constants.LITERAL, constants.LITERAL]
    assert constants.SUBPATTERN in ops and constants.AT in ops


def test_nio_crypto_parts_the_sender_device_check_relies_on() -> None:
    """adapters/matrix_crypto.py judges a decrypted event's device from the device store
    (by sender key), the inbound group session's signing key and forwarding chain, and
    queues a key query for an unknown device."""
    from nio.crypto import DeviceStore, InboundGroupSession, Olm, OlmDevice  # noqa: PLC0415

    assert callable(getattr(DeviceStore, "device_from_sender_key", None))
    assert isinstance(getattr(OlmDevice, "verified", None), property)
    assert _assigned(InboundGroupSession, "forwarding_chain")
    assert _assigned(InboundGroupSession, "ed25519")
    assert _assigned(Olm, "inbound_group_store") and _assigned(Olm, "users_for_key_query")


def test_dkimpy_parts_the_signature_coverage_check_relies_on() -> None:
    """gateway/parse/dkim_check.py reads the verified signature's tags and the headers."""
    import dkim  # noqa: PLC0415

    assert _assigned(dkim.DKIM, "signature_fields") and _assigned(dkim.DKIM, "headers")
