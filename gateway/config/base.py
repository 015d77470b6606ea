"""The configuration's building blocks: the strict base model (frozen, no unknown keys),
secrets given inline or as files, checked addresses and identifier patterns, and the error
that lists every problem with its TOML path."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")


def _listen_host(value: str) -> str:
    if value != "localhost":
        ipaddress.ip_address(value)  # a listener binds an address, not a name to look up
    return value


ListenHost = Annotated[str, AfterValidator(_listen_host)]


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


_ROOM_ID = r"^!\S+$"  # room version 12 ids have no server part


_USER_ID = r"^@[^:\s]+:\S+$"


_HTTPS = r"^https?://[^\s/]+(/\S*)?$"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DOMAIN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"
