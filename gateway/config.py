"""Typed, frozen, validated configuration: the TOML file, its defaults, and secrets read from files.

Everything here is checked before the event loop starts; `load_config` raises ConfigError
with one line per problem, each prefixed by its TOML path, so `check-config` and `run`
print the same messages.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")


class ConfigError(ValueError):
    """The configuration is invalid; `errors` holds one `path: message` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_address(value: str) -> str:
    value = value.strip().lower()
    if not _ADDRESS.match(value):
        raise ValueError(f"not an email address: {value!r}")
    return value


Address = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_check_address)]


class Secret(_Model):
    """A secret given inline (`value`) or, better, as a file (`file`).

    A relative `file` is looked up in `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential=)
    when that is set, else next to the configuration file.
    """

    value: SecretStr | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.value is None) == (self.file is None):
            raise ValueError("give exactly one of 'value' or 'file'")
        return self


class StateConfig(_Model):
    """Where the SQLite database and written mail live."""

    dir: Path | None = None  # default: $STATE_DIRECTORY, else ./var


class SmtpIntakeConfig(_Model):
    """The SMTP listener tenants' mail arrives on."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    hostname: str = "localhost"
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    commit_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1)  # more get 421 4.7.0 and are closed
    idle_timeout_s: float = Field(default=60.0, gt=0)  # a silent client is hung up on

    @field_validator("host")
    @classmethod
    def _ip(cls, value: str) -> str:
        if value != "localhost":
            ipaddress.ip_address(value)
        return value


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


_ROOM_ID = r"^!\S+$"  # room version 12 ids have no server part
_USER_ID = r"^@[^:\s]+:\S+$"


class ReportRoomConfig(_Model):
    """A tenant-facing room: messages there are reports, answered in their thread."""

    room: Annotated[str, Field(pattern=_ROOM_ID)]
    mailbox: Literal["emergency", "support"] = "support"


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
            raise ValueError("'encryption = \"on\"' needs 'pickle_key' (a secret file): "
                             "the crypto store is never pickled with a default key")
        if not self.engineers and self.min_power_level is None:
            raise ValueError("nobody could run commands: set 'engineers' or 'min_power_level'")
        rooms = [self.incidents_room, *(r.room for r in self.report_rooms)]
        if len(set(rooms)) != len(rooms):
            raise ValueError("a room is listed twice")
        return self


_HTTPS = r"^https?://[^\s/]+(/\S*)?$"


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
    components: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")],
                     Annotated[str, Field(pattern=r"^[A-Za-z0-9]+$")]] = Field(min_length=1)
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


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
                raise ValueError("tls = \"none\" sends the password in clear: set "
                                 "allow_plaintext = true (loopback hosts only)")
            if not _loopback(self.host):
                raise ValueError("tls = \"none\" is only allowed for a loopback host")
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
        given = [name for name in ("routing_key", "room", "address")
                 if getattr(self, name) is not None]
        if given != [needs]:
            raise ValueError(f"kind '{self.kind}' takes '{needs}' (and only that)")
        return self


class LogConfig(_Model):
    """Structured logs: JSON lines for journald, or a console renderer on a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


_DOMAIN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"


def _check_allowed(value: str) -> str:
    value = value.strip().lower()
    if re.match(_USER_ID, value):
        return value
    return _check_address(value)


class TrustConfig(_Model):
    """Who may page on their own (gateway.trust). Empty allow-lists: nobody does."""

    trusted_authserv_id: str | None = None  # the MTA whose Authentication-Results count
    verify_dkim: bool = False  # check DKIM ourselves (only without a trusted MTA)
    allow_domains: list[Annotated[str, Field(pattern=_DOMAIN, max_length=253)]] = []
    allow_addresses: list[Annotated[str, AfterValidator(_check_allowed)]] = []
    allow_all: bool = False  # every authentic sender is known (for a trusted MTA that filters)
    unverified: Literal["ticket"] = "ticket"  # what an untrusted page becomes

    @field_validator("allow_domains", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return [v.strip().lower() for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_check(self) -> TrustConfig:
        if self.verify_dkim and self.trusted_authserv_id:
            raise ValueError("'verify_dkim' is for when no trusted MTA is in front; "
                             "drop one of 'verify_dkim' and 'trusted_authserv_id'")
        return self


class ThreadingConfig(_Model):
    """The key that signs our Message-IDs (gateway.tokens). Without it, a key is generated
    once and kept in the state database; required when mail goes out through a relay."""

    key: Secret | None = None


class LimitsConfig(_Model):
    """Rate limits, storm joining and loop detection (gateway.storm)."""

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

    @model_validator(mode="after")
    def _loopback(self) -> HttpConfig:
        try:
            loopback = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            raise ValueError(f"host: not an IP address: {self.host!r}") from None
        if not loopback and not self.allow_remote:
            raise ValueError("host: not a loopback address (set allow_remote = true to allow)")
        return self


class Config(_Model):
    """The whole daemon configuration."""

    state: StateConfig = StateConfig()
    smtp: SmtpIntakeConfig = SmtpIntakeConfig()
    mailboxes: MailboxesConfig = MailboxesConfig()
    mail_out: MailOutConfig = MailOutConfig()
    pagerduty: PagerDutyConfig | None = None
    matrix: MatrixConfig | None = None
    imap: list[ImapConfig] = []
    rules: RulesConfig = RulesConfig()
    tickets: TicketsConfig = TicketsConfig()
    statuspage: StatuspageConfig | None = None
    security: SecurityConfig | None = None
    outbox: OutboxConfig = OutboxConfig()
    log: LogConfig = LogConfig()
    trust: TrustConfig = TrustConfig()
    threading: ThreadingConfig = ThreadingConfig()
    limits: LimitsConfig = LimitsConfig()
    http: HttpConfig = HttpConfig()
    sla: SlaConfig = SlaConfig()
    escalation: list[EscalationStep] = []
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _security_room(self) -> Config:
        if self.security and self.security.room and self.matrix is None:
            raise ValueError("security.room needs a [matrix] section")
        return self

    @model_validator(mode="after")
    def _imap_names(self) -> Config:
        names = [box.name for box in self.imap]
        if len(set(names)) != len(names):
            raise ValueError("imap: each [[imap]] needs its own 'name'")
        return self

    @model_validator(mode="after")
    def _escalation_rooms(self) -> Config:
        if self.matrix is None and any(step.kind == "chat" for step in self.escalation):
            raise ValueError("escalation: a 'chat' step needs a [matrix] section")
        if self.pagerduty is None and any(step.kind == "page" for step in self.escalation):
            raise ValueError("escalation: a 'page' step needs a [pagerduty] section")
        return self

    def state_dir(self) -> Path:
        """The state directory: configured, else $STATE_DIRECTORY (systemd), else ./var."""
        if self.state.dir is not None:
            return self.base_dir / self.state.dir
        env = os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        return Path("var")

    def database_path(self) -> Path:
        """The SQLite database file."""
        return self.state_dir() / "gateway.sqlite3"

    def mail_folder(self) -> Path:
        """Where outbound mail is written in folder mode."""
        if self.mail_out.folder is not None:
            return self.base_dir / self.mail_out.folder
        return self.state_dir() / "outgoing-mail"

    def rules_file(self) -> Path | None:
        """The rulebook file, resolved against the config file's folder."""
        return None if self.rules.file is None else self.base_dir / self.rules.file

    def imap_ca_file(self, box: ImapConfig) -> Path | None:
        """An IMAP mailbox's CA file, resolved against the config file's folder."""
        return None if box.ca_file is None else self.base_dir / box.ca_file

    def read_secret(self, secret: Secret) -> str:
        """The secret's value; a file is read now (and stripped of a trailing newline)."""
        if secret.value is not None:
            return secret.value.get_secret_value()
        assert secret.file is not None
        path = secret.file
        if not path.is_absolute():
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            path = Path(creds) / path if creds else self.base_dir / path
        return path.read_text(encoding="utf-8").rstrip("\r\n")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-after",) and not part.startswith("function-"):
            out += ("." if out else "") + part
    return out or "(top level)"


def _format(error: ValidationError) -> list[str]:
    lines = []
    for err in error.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{_loc(err['loc'])}: {msg}")
    return lines


def parse_config(data: dict[str, Any], base_dir: Path = Path(".")) -> Config:
    """Validate a decoded TOML document; raises ConfigError listing every problem."""
    try:
        config = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
    errors = _check_secret_files(config)
    if config.mail_out.mode == "smtp" and config.threading.key is None:
        errors.append("threading.key: required when mail_out.mode is 'smtp' (a secret of at "
                      "least 16 bytes that signs our Message-IDs)")
    if errors:
        raise ConfigError(errors)
    return config


def _secrets(config: Config) -> list[tuple[str, Secret]]:
    found: list[tuple[str, Secret]] = []
    if config.pagerduty is not None:
        found.append(("pagerduty.routing_key", config.pagerduty.routing_key))
    relay = config.mail_out.smtp
    if relay is not None and relay.password is not None:
        found.append(("mail_out.smtp.password", relay.password))
    if config.threading.key is not None:
        found.append(("threading.key", config.threading.key))
    if config.matrix is not None:
        for name in ("access_token", "password", "pickle_key"):
            secret = getattr(config.matrix, name)
            if secret is not None:
                found.append((f"matrix.{name}", secret))
    for index, step in enumerate(config.escalation):
        if step.routing_key is not None:
            found.append((f"escalation[{index}].routing_key", step.routing_key))
    for index, box in enumerate(config.imap):
        found.append((f"imap[{index}].password", box.password))
    found.extend(_more_secrets(config))
    return found


def _more_secrets(config: Config) -> list[tuple[str, Secret]]:
    t = config.tickets
    found: list[tuple[str, Secret]] = []
    if t.zendesk is not None:
        found.append(("tickets.zendesk.token", t.zendesk.token))
    if t.deskpro is not None:
        found.append(("tickets.deskpro.api_key", t.deskpro.api_key))
    if t.github is not None:
        found.append(("tickets.github.token", t.github.token))
    if config.statuspage is not None:
        found.append(("statuspage.api_key", config.statuspage.api_key))
    return found


def _check_secret_files(config: Config) -> list[str]:
    errors = []
    for path, secret in _secrets(config):
        try:
            value = config.read_secret(secret)
        except OSError as exc:
            errors.append(f"{path}.file: cannot read secret file ({exc.strerror})")
            continue
        if not value:
            errors.append(f"{path}: the secret is empty")
        elif path in ("threading.key", "matrix.pickle_key") and len(value.encode()) < 16:
            errors.append(f"{path}: too short (at least 16 bytes)")
    return errors


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML file, or return the embedded defaults when `path` is None."""
    if path is None:
        return parse_config({})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(data, base_dir=path.resolve().parent)
