"""PagerDuty v3 webhook events: the documented payload, its signature, and the neutral value.

Owned here: the shape of a v3 webhook body (`{"event": {id, event_type, resource_type,
occurred_at, agent, data}}`) as far as the gateway reads it, the `X-PagerDuty-Signature`
check (HMAC-SHA256 of the raw body, hex, `v1=` entries, against every configured secret,
in constant time), the replay window on `occurred_at`, and the `PagerDutyEvent` value the
inbox keeps and the pure planner reads. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.parse.alert_payloads import BadPayload

Str = Annotated[str, Field(max_length=4096)]


class _Vendor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Ref(_Vendor):
    id: Str = ""
    summary: Str = ""
    type: Str = ""


class _Assignee(_Vendor):
    summary: Str = ""
    id: Str = ""


class _IncidentData(_Vendor):
    id: Str = ""
    type: Str = ""
    number: int | None = None
    status: Str = ""
    incident_key: Str | None = None
    title: Str = ""
    html_url: Str = ""
    assignees: Annotated[list[_Assignee], Field(max_length=100)] = Field(default_factory=list)
    escalation_policy: _Ref | None = None


class _Event(_Vendor):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    event_type: Annotated[str, Field(min_length=1, max_length=128)]
    resource_type: Str = ""
    occurred_at: datetime
    agent: _Ref | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class _Body(_Vendor):
    event: _Event


@dataclass(frozen=True)
class PagerDutyEvent:
    """One v3 webhook event about an incident."""

    id: str
    event_type: str  # incident.acknowledged, incident.resolved, incident.reassigned, …
    occurred_at: datetime
    incident_key: str | None  # our dedup_key (INC-n) for incidents the gateway opened
    incident_number: int | None
    agent: str  # who did it, e.g. "Ana Engineer" (or "PagerDuty" for automatic actions)
    assignees: tuple[str, ...]
    escalation_policy: str
    url: str

    def to_json(self) -> bytes:
        """The inbox form."""
        return json.dumps(
            {
                "type": "pagerduty",
                "id": self.id,
                "event_type": self.event_type,
                "occurred_at": self.occurred_at.isoformat(),
                "incident_key": self.incident_key,
                "incident_number": self.incident_number,
                "agent": self.agent,
                "assignees": list(self.assignees),
                "escalation_policy": self.escalation_policy,
                "url": self.url,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()


def event_from_json(raw: bytes) -> PagerDutyEvent:
    """Read back what `to_json` wrote."""
    d = json.loads(raw)
    return PagerDutyEvent(
        id=str(d["id"]),
        event_type=str(d["event_type"]),
        occurred_at=datetime.fromisoformat(d["occurred_at"]),
        incident_key=d["incident_key"],
        incident_number=d["incident_number"],
        agent=str(d["agent"]),
        assignees=tuple(d["assignees"]),
        escalation_policy=str(d["escalation_policy"]),
        url=str(d["url"]),
    )


def signature_ok(header: str | None, body: bytes, secrets: Iterable[bytes]) -> bool:
    """Whether any `v1=` signature in the header is the HMAC-SHA256 of `body` under any
    secret. Every pair is compared (in constant time), so the answer's timing does not say
    which signature or secret came close."""
    if not header:
        return False
    offered = [
        part.strip()[3:] for part in header.split(",")[:10] if part.strip().startswith("v1=")
    ]
    expected = [hmac.new(s, body, hashlib.sha256).hexdigest() for s in secrets]
    found = False
    for sig in offered:
        for exp in expected:
            found |= hmac.compare_digest(sig.encode(), exp.encode())
    return found


def decode_event(body: bytes) -> PagerDutyEvent:
    """The event in a (signature-checked) body; BadPayload when it is not a v3 event."""
    try:
        parsed = _Body.model_validate_json(body)
    except ValidationError:
        raise BadPayload("not a PagerDuty v3 webhook event") from None
    e = parsed.event
    incident = _IncidentData()
    if e.resource_type == "incident" or e.event_type.startswith("incident."):
        try:
            incident = _IncidentData.model_validate(e.data)
        except ValidationError:
            raise BadPayload("not a PagerDuty v3 incident event") from None
    if e.occurred_at.tzinfo is None:
        raise BadPayload("occurred_at has no time zone")
    return PagerDutyEvent(
        id=e.id,
        event_type=e.event_type,
        occurred_at=e.occurred_at,
        incident_key=incident.incident_key,
        incident_number=incident.number,
        agent=(e.agent.summary if e.agent and e.agent.summary else "PagerDuty"),
        assignees=tuple(a.summary for a in incident.assignees if a.summary),
        escalation_policy=incident.escalation_policy.summary if incident.escalation_policy else "",
        url=incident.html_url,
    )


def fresh(occurred_at: datetime, now: datetime, max_age_s: float) -> bool:
    """Whether the event is within the replay window around `now`."""
    return abs((now - occurred_at).total_seconds()) <= max_age_s
