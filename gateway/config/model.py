"""Typed, frozen, validated configuration: the TOML file, its defaults, and secrets read from files.

Everything here is checked before the event loop starts; `load_config` raises ConfigError
with one line per problem, each prefixed by its TOML path, so `check-config` and `run`
print the same messages.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from gateway.config.alerts import AlertsConfig
from gateway.config.base import ConfigError, Secret, _Model
from gateway.config.egress import (
    EscalationStep,
    MailOutConfig,
    OutboxConfig,
    PagerDutyConfig,
    SecurityConfig,
    SlaConfig,
    StatuspageConfig,
    TicketsConfig,
)
from gateway.config.groups import AnswersConfig
from gateway.config.intake import (
    HttpConfig,
    ImapConfig,
    LimitsConfig,
    LogConfig,
    MailboxesConfig,
    MatrixConfig,
    RulesConfig,
    SmtpIntakeConfig,
    StateConfig,
    ThreadingConfig,
    TrustConfig,
)
from gateway.config.links import (
    CanaryConfig,
    HealthConfig,
    HeartbeatConfig,
    NotifyFailureConfig,
)

__all__ = ["Config", "ConfigError", "Secret", "load_config", "parse_config"]


CRYPTO_FOLDER = "matrix-crypto"  # in the state folder: the Matrix crypto store


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
    answers: AnswersConfig = AnswersConfig()
    http: HttpConfig = HttpConfig()
    sla: SlaConfig = SlaConfig()
    escalation: list[EscalationStep] = []
    health: HealthConfig = HealthConfig()
    heartbeat: HeartbeatConfig | None = None
    canary: CanaryConfig = CanaryConfig()
    notify_failure: NotifyFailureConfig = NotifyFailureConfig()
    alerts: AlertsConfig | None = None
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

    @model_validator(mode="after")
    def _alert_listener(self) -> Config:
        a = self.alerts
        if a is not None and (a.high_priority_room or a.low_priority_room) and not self.matrix:
            raise ValueError("alerts: alarm rooms need a [matrix] section")
        if self.pagerduty and self.pagerduty.webhook and (a is None or not a.enabled):
            raise ValueError("pagerduty.webhook: needs the [alerts] listener, which serves it")
        # Any address: a wildcard or another local address on the same port would clash too.
        if (
            a is not None
            and a.enabled
            and self.http.enabled
            and a.port != 0
            and (a.port == self.http.port)
        ):
            raise ValueError(
                "alerts.port: the alert listener needs its own port, not the status endpoint's"
            )
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

    def crypto_dir(self) -> Path:
        """The Matrix crypto store's folder (beside the SQLite file on one host; this
        node's copy of the shared one on several)."""
        return self.state_dir() / CRYPTO_FOLDER

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
        return self.secret_file(secret).read_text(encoding="utf-8").rstrip("\r\n")

    def secret_file(self, secret: Secret) -> Path:
        """Where a `{ file = … }` secret is read from."""
        if secret.file is None:
            raise RuntimeError("file is set here")
        path = secret.file
        if not path.is_absolute():
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            path = Path(creds) / path if creds else self.base_dir / path
        return path


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
        errors.append(
            "threading.key: required when mail_out.mode is 'smtp' (a secret of at "
            "least 16 bytes that signs our Message-IDs)"
        )
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
    found.extend(_webhook_secrets(config))
    return found


def _webhook_secrets(config: Config) -> list[tuple[str, Secret]]:
    found = []
    if config.alerts is not None:
        found += [
            (f"alerts.source[{i}].secret", s.secret) for i, s in enumerate(config.alerts.sources)
        ]
    hook = config.pagerduty.webhook if config.pagerduty else None
    if hook is not None:
        found += [(f"pagerduty.webhook.secrets[{i}]", s) for i, s in enumerate(hook.secrets)]
    return found


def secret_paths(config: Config) -> list[tuple[str, Path]]:
    """(TOML path, file) of every secret given as a file."""
    return [
        (name, config.secret_file(secret))
        for name, secret in _secrets(config)
        if secret.file is not None and secret.value is None
    ]


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
    pg = config.state.postgresql
    if config.state.backend == "postgresql" and pg is not None and pg.password is not None:
        found.append(("state.postgresql.password", pg.password))
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
        elif (
            path in ("threading.key", "matrix.pickle_key")
            or path.startswith(("alerts.", "pagerduty.webhook."))
        ) and len(value.encode()) < 16:
            errors.append(f"{path}: too short (at least 16 bytes)")
    return errors


# The embedded defaults are for trying the gateway out on one machine: SMTP on loopback,
# pages recorded in the store (nobody is woken), replies written to a folder. There every
# sender may page, so that a first report shows the whole path; a configuration file starts
# from an empty allow-list instead (nobody pages without an engineer's !page).
EMBEDDED_DEFAULTS: dict[str, Any] = {"trust": {"allow_all": True}}


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML file, or return the embedded defaults when `path` is None."""
    if path is None:
        return parse_config(EMBEDDED_DEFAULTS)
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
