"""Configuration sections for webhooks in: `[alerts]` (the alert listener and its sources,
each with its own credential) and `[pagerduty.webhook]` (PagerDuty v3 webhook secrets)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import _ROOM_ID, Secret, _Model

_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_HEADER = r"^[A-Za-z0-9-]{1,64}$"


class AlertSourceConfig(_Model):
    """One monitoring system that may send alerts, at `/alerts/<name>`, with its credential.

    `auth`: "bearer" (an `Authorization: Bearer <secret>` header: Alertmanager's
    `http_config.authorization`, Grafana's authorization header), "hmac" (a hex HMAC-SHA256
    of the raw body with the secret, in `hmac_header`, optionally prefixed "sha256="), or
    "url_token" (`?token=<secret>` in the URL, for senders that can set no header, such as
    Pingdom; use it only over TLS, since the URL may be logged by proxies).
    """

    name: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["alertmanager", "grafana", "pingdom", "generic"]
    auth: Literal["bearer", "hmac", "url_token"] = "bearer"
    secret: Secret
    hmac_header: Annotated[str, Field(pattern=_HEADER)] = "X-Signature-256"
    # With Grafana's "Timestamp Header" set: the signature covers "<timestamp>:<body>", and a
    # timestamp more than hmac_max_age_s from now is refused as a replay.
    hmac_timestamp_header: Annotated[str, Field(pattern=_HEADER)] | None = None
    hmac_max_age_s: float = Field(default=300.0, gt=0)
    rate_per_minute: int = Field(default=600, ge=1)  # more get 429 with Retry-After


class AlertsConfig(_Model):
    """The alert webhook listener. Never the status endpoint: its own address and port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9726, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)  # larger bodies get 413
    commit_timeout_s: float = Field(default=10.0, gt=0)  # slower commits answer 503
    # Every request counts; past it, requests without a good credential get 429 (unverified
    # load is shed first), while each source is held only to its own rate_per_minute.
    rate_per_minute: int = Field(default=6000, ge=1)
    sources: list[AlertSourceConfig] = Field(default=[], alias="source")
    # Alarm rooms (needs [matrix]): alert incidents of `high_priorities` are posted to the
    # high-priority room, the others to the low-priority room, each in its own thread.
    high_priority_room: Annotated[str, Field(pattern=_ROOM_ID)] | None = None
    low_priority_room: Annotated[str, Field(pattern=_ROOM_ID)] | None = None
    high_priorities: list[Literal["P1", "P2", "P3", "P4"]] = ["P1", "P2"]

    @field_validator("host")
    @classmethod
    def _ip(cls, value: str) -> str:
        if value != "localhost":
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _unique(self) -> AlertsConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError("source: each [[alerts.source]] needs its own name")
        return self


class PagerDutyWebhookConfig(_Model):
    """PagerDuty v3 webhooks (served by the `[alerts]` listener at `/pagerduty`).

    Every signature in `X-PagerDuty-Signature` is checked against every secret (several
    while a secret is rotated). An event that occurred more than `max_age_s` ago (or as far
    in the future) is refused as a replay; a repeated event id is processed once.
    `on_resolved`: "resolve" resolves our incident when PagerDuty's is resolved; "note"
    only records it and asks the engineers to `!resolve`.
    """

    secrets: Annotated[list[Secret], Field(min_length=1)]
    max_age_s: float = Field(default=900.0, gt=0)
    on_resolved: Literal["resolve", "note"] = "resolve"
