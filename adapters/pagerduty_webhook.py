"""PagerDuty v3 webhooks at the edge: which requests are PagerDuty's, fresh, and about what.

The alert listener (adapters.alerts_http) serves `POST /pagerduty` and hands each body here:
the `X-PagerDuty-Signature` check (every `v1=` entry against every configured secret, in
constant time), the event's decoding into the core's neutral `PagerDutyEvent`, and the
replay window on its `occurred_at`. A refusal is an HTTP status and a reason safe to answer
and log (it never quotes the request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.parse.alert_payloads import BadPayload
from gateway.parse.pagerduty_events import PagerDutyEvent, decode_event, fresh, signature_ok


@dataclass(frozen=True)
class PagerDutyHook:
    """PagerDuty v3 webhook secrets (any may sign) and the replay window."""

    secrets: tuple[bytes, ...]
    max_age_s: float = 900.0


@dataclass(frozen=True)
class Refusal:
    """Why a request is not taken: the status, the answer's reason, the log's reason."""

    status: int
    reason: str
    why: str


def check(
    hook: PagerDutyHook, headers: Mapping[str, str], body: bytes, now: datetime | None
) -> PagerDutyEvent | Refusal:
    """The signed, fresh event in a request, or why it is refused (`now`: None for the
    event's own time zone's current time)."""
    if not signature_ok(headers.get("X-PagerDuty-Signature"), body, hook.secrets):
        return Refusal(401, "bad signature", "signature")
    try:
        event = decode_event(body)
    except BadPayload as exc:
        return Refusal(422, exc.reason, "bad_payload")
    at = now if now is not None else datetime.now(event.occurred_at.tzinfo)
    if not fresh(event.occurred_at, at, hook.max_age_s):
        return Refusal(422, "event outside the replay window", "replay")
    return event
