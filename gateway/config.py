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

    @model_validator(mode="after")
    def _sane(self) -> MatrixConfig:
        if self.access_token is None and self.password is None:
            raise ValueError("give 'access_token' or 'password'")
        if not self.engineers and self.min_power_level is None:
            raise ValueError("nobody could run commands: set 'engineers' or 'min_power_level'")
        rooms = [self.incidents_room, *(r.room for r in self.report_rooms)]
        if len(set(rooms)) != len(rooms):
            raise ValueError("a room is listed twice")
        return self


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


class LogConfig(_Model):
    """Structured logs: JSON lines for journald, or a console renderer on a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Model):
    """The whole daemon configuration."""

    state: StateConfig = StateConfig()
    smtp: SmtpIntakeConfig = SmtpIntakeConfig()
    mailboxes: MailboxesConfig = MailboxesConfig()
    mail_out: MailOutConfig = MailOutConfig()
    pagerduty: PagerDutyConfig | None = None
    matrix: MatrixConfig | None = None
    rules: RulesConfig = RulesConfig()
    outbox: OutboxConfig = OutboxConfig()
    log: LogConfig = LogConfig()
    base_dir: Path = Field(default=Path("."), exclude=True)

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
    if config.matrix is not None:
        for name in ("access_token", "password"):
            secret = getattr(config.matrix, name)
            if secret is not None:
                found.append((f"matrix.{name}", secret))
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
