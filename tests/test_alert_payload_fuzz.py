"""Hostile webhook bodies: decoding never fails with anything but BadPayload, and what it
accepts is bounded."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alerts import notification_from_json
from gateway.parse.alert_payloads import BadPayload, decode
from gateway.parse.pagerduty_events import decode_event, event_from_json
from rules.alert_rules import AlertSource

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "version",
        "groupKey",
        "status",
        "alerts",
        "labels",
        "fingerprint",
        "check_id",
        "check_name",
        "current_state",
        "key",
        "name",
        "event",
        "occurred_at",
        "event_type",
        "id",
        "data",
        "incident_key",
    ]
)
SHAPED = st.dictionaries(KEYS, JSON, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda v: json.dumps(v).encode()),
        SHAPED.map(lambda v: json.dumps(v).encode()),
    ),
    kind=st.sampled_from(list(AlertSource)),
)
def test_any_body_decodes_or_is_refused_cleanly(body: bytes, kind: AlertSource) -> None:
    """Any body is either a notification that survives the inbox round trip, or BadPayload."""
    try:
        n = decode(kind, "src", body)
    except BadPayload as exc:
        reason = exc.reason
    else:
        assert notification_from_json(n.to_json()) == n
        return
    assert reason and len(reason) < 600


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=200), SHAPED.map(lambda v: json.dumps({"event": v}).encode()))
)
def test_any_pagerduty_body_decodes_or_is_refused_cleanly(body: bytes) -> None:
    """Any (signed) body is a PagerDuty event or BadPayload, never another exception."""
    try:
        event = decode_event(body)
    except BadPayload as exc:
        reason = exc.reason
    else:
        assert event.id and event_from_json(event.to_json()) == event
        return
    assert reason
