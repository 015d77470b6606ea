"""Outbox payload contracts: one TypedDict per kind, and the check made before queuing."""

from __future__ import annotations

from gateway.domain import OutboxKind
from gateway.payloads import PAYLOADS, problems


def test_every_outbox_kind_has_a_payload_shape() -> None:
    """No kind can be queued without a declared payload."""
    assert set(PAYLOADS) == set(OutboxKind)


def test_a_missing_required_key_is_named() -> None:
    """A page without its summary is reported by kind and key."""
    payload = {"dedup_key": "INC-1", "severity": "critical", "source": "gw", "details": {}}
    assert problems(OutboxKind.PAGE_TRIGGER, payload) == ["page.trigger payload lacks 'summary'"]


def test_optional_keys_may_be_absent_and_extra_keys_present() -> None:
    """A chat message needs only room, body and purpose; a planner may add context."""
    payload = {"room_id": "!r", "body": "hi", "purpose": "update", "note": "extra"}
    assert problems(OutboxKind.CHAT_SEND, payload) == []
    assert problems(OutboxKind.TICKET_UPDATE, {"at": "2026-01-01T00:00:00+00:00"}) == []
