"""Configuration sections for what goes out: mail to reporters, pages, tickets, the status
page, security contacts, the outbox's retries, and the SLA reminders and escalation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from gateway.config.alerts import PagerDutyWebhookConfig
from gateway.config.base import _HTTPS, _ROOM_ID, Address, Secret, _Model


class SmtpRelayConfig(_Model):
    """The relay outbound mail goes through when `mail_out.mode = "smtp"`."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    starttls: bool = True
    tls: bool = False
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _tls(self) -> SmtpRelayConfig:
        if self.starttls and self.tls:
            raise ValueError("'starttls' and 'tls' (implicit TLS) exclude each other")
        if (self.username is None) != (self.password is None):
            raise ValueError("'username' and 'password' go together")
        return self


class MailOutConfig(_Model):
    """How replies to reporters leave: written as .eml files (default) or through a relay."""

    mode: Literal["folder", "smtp"] = "folder"
    from_address: Address = "emergency@localhost"
    from_name: str = "Platform support"
    folder: Path | None = None  # default: <state dir>/outgoing-mail
    smtp: SmtpRelayConfig | None = None

    @field_validator("from_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n"):
            raise ValueError("must be a single line")
        return value

    @model_validator(mode="after")
    def _relay(self) -> MailOutConfig:
        if self.mode == "smtp" and self.smtp is None:
            raise ValueError("mode 'smtp' needs a [mail_out.smtp] section")
        return self


class PagerDutyConfig(_Model):
    """PagerDuty Events API v2. Without it, pages are recorded locally and logged."""

    routing_key: Secret
    url: str = "https://events.pagerduty.com"
    source: str = "chatops-gateway"
    timeout_s: float = Field(default=10.0, gt=0)
    webhook: PagerDutyWebhookConfig | None = None  # v3 webhooks in (gateway.config.alerts)


class ZendeskConfig(_Model):
    """Zendesk Support: the account URL and an agent's email with an API token."""

    url: Annotated[str, Field(pattern=_HTTPS)]  # https://example.zendesk.com
    email: Address
    token: Secret
    timeout_s: float = Field(default=15.0, gt=0)


class DeskproConfig(_Model):
    """Deskpro: the helpdesk URL and an API key ("<id>:<secret>")."""

    url: Annotated[str, Field(pattern=_HTTPS)]
    api_key: Secret
    requester: Address | None = None  # for reports whose sender has no email address
    timeout_s: float = Field(default=15.0, gt=0)


class GitHubConfig(_Model):
    """GitHub issues in one repository, with a token allowed to write issues."""

    repo: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]
    token: Secret
    url: Annotated[str, Field(pattern=_HTTPS)] = "https://api.github.com"
    timeout_s: float = Field(default=15.0, gt=0)


class TicketsConfig(_Model):
    """Where tickets live: the built-in store (default), Zendesk, Deskpro or GitHub issues."""

    backend: Literal["builtin", "zendesk", "deskpro", "github"] = "builtin"
    zendesk: ZendeskConfig | None = None
    deskpro: DeskproConfig | None = None
    github: GitHubConfig | None = None

    @model_validator(mode="after")
    def _section(self) -> TicketsConfig:
        if self.backend != "builtin" and getattr(self, self.backend) is None:
            raise ValueError(f"backend '{self.backend}' needs a [tickets.{self.backend}] section")
        return self


class StatuspageConfig(_Model):
    """Atlassian Statuspage: the page, an API key, the components people may name."""

    page_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9]+$")]
    api_key: Secret
    components: dict[
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")],
        Annotated[str, Field(pattern=r"^[A-Za-z0-9]+$")],
    ] = Field(min_length=1)
    min_priority: Literal["P1", "P2", "P3", "P4"] = "P2"
    url: Annotated[str, Field(pattern=_HTTPS)] = "https://api.statuspage.io"
    timeout_s: float = Field(default=15.0, gt=0)


class SecurityConfig(_Model):
    """Who is told at once about a suspected security breach: an address and/or a room."""

    email: Address | None = None
    room: Annotated[str, Field(pattern=_ROOM_ID)] | None = None

    @model_validator(mode="after")
    def _someone(self) -> SecurityConfig:
        if self.email is None and self.room is None:
            raise ValueError("give 'email' and/or 'room'")
        return self


class OutboxConfig(_Model):
    """Retry policy for pages, tickets and mail."""

    max_attempts: int = Field(default=12, ge=1)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    drain_timeout_s: float = Field(default=10.0, ge=0)
    concurrency: int = Field(default=32, ge=1, le=64)
    poll_interval_s: float = Field(default=5.0, gt=0)  # finds entries sent back by `retry`


class SlaConfig(_Model):
    """Reminders, holding replies, the out-of-hours digest and handover reminders
    (docs/sla.md). The clocks themselves come from the rulebook's priorities and hours."""

    enabled: bool = True
    respond_warning_minutes: int = Field(default=5, ge=1, le=120)
    update_warning_minutes: int = Field(default=10, ge=1, le=240)
    holding_replies: list[Literal["P1", "P2", "P3", "P4"]] = ["P1"]
    escalate: list[Literal["P1", "P2", "P3", "P4"]] = ["P1"]
    handover_priorities: list[Literal["P1", "P2", "P3", "P4"]] = ["P1", "P2"]
    digest: bool = True
    handover_at_close: bool = True
    handover_after_hours: float | None = Field(default=6.0, gt=0)


class EscalationStep(_Model):
    """One `[[escalation]]` step, taken once when an incident is not acknowledged in time:
    page an escalation routing key, post in a room, or email a contact."""

    kind: Literal["page", "chat", "email"]
    after_minutes: int = Field(default=0, ge=0)  # after the respond-by time
    routing_key: Secret | None = None
    room: Annotated[str, Field(pattern=_ROOM_ID)] | None = None
    address: Address | None = None

    @model_validator(mode="after")
    def _target(self) -> EscalationStep:
        needs = {"page": "routing_key", "chat": "room", "email": "address"}[self.kind]
        given = [
            name for name in ("routing_key", "room", "address") if getattr(self, name) is not None
        ]
        if given != [needs]:
            raise ValueError(f"kind '{self.kind}' takes '{needs}' (and only that)")
        return self
