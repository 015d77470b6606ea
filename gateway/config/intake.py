"""Configuration sections for what comes in and who is let in: state, the SMTP listener,
mailboxes, IMAP, Matrix, the rulebook, logs, the status endpoint, sender trust, thread
signing and rate limits."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from gateway.config.base import (
    _DOMAIN,
    _ROOM_ID,
    _USER_ID,
    Address,
    ListenHost,
    Secret,
    _check_address,
    _loopback,
    _Model,
)
from gateway.config.groups import ForwarderConfig, check_forwarders
from gateway.config.state import PostgresConfig


class StateConfig(_Model):
    """Where the state lives: the SQLite database (one host) or PostgreSQL (several nodes,
    gateway.config.state), and the folder for written mail."""

    dir: Path | None = None  # default: $STATE_DIRECTORY, else ./var
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    postgresql: PostgresConfig | None = None

    @model_validator(mode="after")
    def _backend_settings(self) -> StateConfig:
        if self.backend == "postgresql" and self.postgresql is None:
            raise ValueError("backend 'postgresql' needs a [state.postgresql] section with a dsn")
        return self


class SmtpIntakeConfig(_Model):
    """The SMTP listener tenants' mail arrives on."""

    enabled: bool = True
    host: ListenHost = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    hostname: str = "localhost"
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    commit_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1)  # more get 421 4.7.0 and are closed
    idle_timeout_s: float = Field(default=60.0, gt=0)  # a silent client is hung up on
    # Session bounds (README "SMTP limits"): past one, 421 and a hang-up.
    max_connections_per_client: int = Field(default=50, ge=1)  # per remote IP (<= the above)
    max_junk_commands: int = Field(default=100, ge=1)  # NOOP/RSET/VRFY/... without mail
    max_errors: int = Field(default=20, ge=1)  # 4xx/5xx replies per session
    max_session_s: float = Field(default=1800.0, gt=0)  # however busy
    # DATA bytes all sessions hold in memory at once; more get 452 (try again later).
    max_data_bytes_in_flight: int = Field(default=64 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _bounds(self) -> SmtpIntakeConfig:
        if self.max_data_bytes_in_flight < self.max_message_bytes:
            raise ValueError(
                "max_data_bytes_in_flight must be at least max_message_bytes "
                "(else no message of the largest size could ever be taken)"
            )
        if self.max_session_s < self.idle_timeout_s:
            raise ValueError("max_session_s must be at least idle_timeout_s")
        return self


class MailboxesConfig(_Model):
    """Which recipient addresses are the emergency and the support mailboxes."""

    emergency: list[Address] = ["emergency@localhost"]
    support: list[Address] = ["support@localhost"]

    @model_validator(mode="after")
    def _disjoint(self) -> MailboxesConfig:
        both = set(self.emergency) & set(self.support)
        if both:
            raise ValueError(f"addresses in both mailboxes: {sorted(both)}")
        if not self.emergency and not self.support:
            raise ValueError("at least one mailbox address is needed")
        return self


class ReportRoomConfig(_Model):
    """A tenant-facing room: messages there are reports, answered in their thread."""

    room: Annotated[str, Field(pattern=_ROOM_ID)]
    mailbox: Literal["emergency", "support"] = "support"
    # With trust = "verified-only": reports only from verified devices (docs/matrix-e2ee.md)
    verified_devices_only: bool = False


class PinnedDeviceConfig(_Model):
    """A device whose fingerprint an operator checked (Element: Settings → Sessions)."""

    user: Annotated[str, Field(pattern=_USER_ID)]
    device: Annotated[str, Field(min_length=1, max_length=255)]
    ed25519: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}$")]


class MatrixConfig(_Model):
    """The Matrix bot account and the rooms it works in (rooms by ID, never by invitation)."""

    homeserver: Annotated[str, Field(pattern=r"^https?://\S+$")]
    user_id: Annotated[str, Field(pattern=_USER_ID)]
    access_token: Secret | None = None
    password: Secret | None = None
    device_id: str | None = None
    device_name: str = "chatops-gateway"
    incidents_room: Annotated[str, Field(pattern=_ROOM_ID)]
    report_rooms: list[ReportRoomConfig] = []
    engineers: list[Annotated[str, Field(pattern=_USER_ID)]] = []
    min_power_level: int | None = None
    sync_timeout_s: float = Field(default=30.0, gt=0, le=300)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # End-to-end encryption (docs/matrix-e2ee.md)
    encryption: Literal["off", "on"] = "off"
    pickle_key: Secret | None = None  # encrypts the crypto store; required with encryption
    trust: Literal["tofu-engineers", "verified-only"] = "tofu-engineers"
    trusted_devices: list[PinnedDeviceConfig] = []
    undecryptable_wait_s: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _sane(self) -> MatrixConfig:
        if self.access_token is None and self.password is None:
            raise ValueError("give 'access_token' or 'password'")
        if self.encryption == "on" and self.pickle_key is None:
            raise ValueError(
                "'encryption = \"on\"' needs 'pickle_key' (a secret file): "
                "the crypto store is never pickled with a default key"
            )
        if not self.engineers and self.min_power_level is None:
            raise ValueError("nobody could run commands: set 'engineers' or 'min_power_level'")
        if any(r.verified_devices_only for r in self.report_rooms) and (
            self.encryption != "on" or self.trust != "verified-only"
        ):
            raise ValueError(
                "'verified_devices_only' in a report room needs "
                "'encryption = \"on\"' and 'trust = \"verified-only\"'"
            )
        rooms = [self.incidents_room, *(r.room for r in self.report_rooms)]
        if len(set(rooms)) != len(rooms):
            raise ValueError("a room is listed twice")
        return self


class ImapConfig(_Model):
    """One mailbox on an existing mail server, watched with IMAP IDLE (`[[imap]]`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # default: 993, or 143 without TLS
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    allow_plaintext: bool = False  # needed for tls = "none", and only on loopback
    ca_file: Path | None = None  # trust this CA (PEM) instead of the system's
    user: str
    password: Secret
    folder: str = "INBOX"
    mailbox: Literal["emergency", "support"] = "emergency"
    processed_folder: str | None = None  # move processed mail here instead of marking \Seen
    idle_renew_s: float = Field(default=600.0, gt=0, le=600)
    poll_interval_s: float = Field(default=60.0, gt=0, le=3600)  # when the server lacks IDLE
    timeout_s: float = Field(default=60.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    auth_retry_s: float = Field(default=300.0, gt=0)  # after bad credentials

    @model_validator(mode="after")
    def _plaintext(self) -> ImapConfig:
        if self.tls == "none":
            if not self.allow_plaintext:
                raise ValueError(
                    'tls = "none" sends the password in clear: set '
                    "allow_plaintext = true (loopback hosts only)"
                )
            if not _loopback(self.host):
                raise ValueError('tls = "none" is only allowed for a loopback host')
        if self.processed_folder is not None and self.processed_folder == self.folder:
            raise ValueError("'processed_folder' must differ from 'folder'")
        return self

    def effective_port(self) -> int:
        """The configured port, or the standard one for the TLS mode."""
        if self.port is not None:
            return self.port
        return 993 if self.tls == "implicit" else 143


class RulesConfig(_Model):
    """The triage rulebook: the packaged default unless a file is given."""

    file: Path | None = None


class LogConfig(_Model):
    """Structured logs: JSON lines for journald, or a console renderer on a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _check_allowed(value: str) -> str:
    value = value.strip().lower()
    if re.match(_USER_ID, value):
        return value
    return _check_address(value)


class TrustConfig(_Model):
    """Who may page on their own (gateway.plan.trust). Empty allow-lists: nobody does."""

    trusted_authserv_id: str | None = None  # the MTA whose Authentication-Results count
    verify_dkim: bool = False  # check DKIM ourselves (only without a trusted MTA)
    allow_domains: list[Annotated[str, Field(pattern=_DOMAIN, max_length=253)]] = []
    allow_addresses: list[Annotated[str, AfterValidator(_check_allowed)]] = []
    allow_all: bool = False  # every authentic sender is known (for a trusted MTA that filters)
    unverified: Literal["ticket"] = "ticket"  # what an untrusted page becomes
    forwarders: list[ForwarderConfig] = []  # groups whose record of authors counts

    @field_validator("allow_domains", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return [v.strip().lower() for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_check(self) -> TrustConfig:
        if self.verify_dkim and self.trusted_authserv_id:
            raise ValueError(
                "'verify_dkim' is for when no trusted MTA is in front; "
                "drop one of 'verify_dkim' and 'trusted_authserv_id'"
            )
        check_forwarders(self.forwarders, self.trusted_authserv_id, self.verify_dkim)
        return self


class ThreadingConfig(_Model):
    """The key that signs our Message-IDs (gateway.plan.tokens). Without it, a key is generated
    once and kept in the state database; required when mail goes out through a relay."""

    key: Secret | None = None


class LimitsConfig(_Model):
    """Rate limits, storm joining and loop detection (gateway.plan.storm)."""

    per_sender: int = Field(default=10, ge=1)
    sender_window_s: float = Field(default=600.0, gt=0)
    global_per_minute: int = Field(default=300, ge=1)
    loop_threshold: int = Field(default=3, ge=2)
    storm_window_s: float = Field(default=1800.0, ge=0)


class HttpConfig(_Model):
    """The health and metrics endpoint (/healthz, /metrics), on loopback unless allowed."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9725, ge=0, le=65535)
    allow_remote: bool = False  # required to bind anything but a loopback address
    outbox_stuck_s: float = Field(default=900.0, gt=0)  # older pending entries: unhealthy
    max_connections: int = Field(default=64, ge=1, le=4096)  # further ones get 503, closed
    idle_timeout_s: float = Field(default=10.0, gt=0, le=3600)  # no whole request: closed

    @model_validator(mode="after")
    def _loopback(self) -> HttpConfig:
        try:
            loopback = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            raise ValueError(f"host: not an IP address: {self.host!r}") from None
        if not loopback and not self.allow_remote:
            raise ValueError("host: not a loopback address (set allow_remote = true to allow)")
        return self
