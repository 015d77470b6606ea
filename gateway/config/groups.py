"""Configuration for mail that arrives through groups and forwarders (`[[trust.forwarders]]`,
judged by gateway.plan.forwarder) and for automatic answers (`[answers]`,
gateway.plan.answer_to)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from gateway.config.base import _DOMAIN, _Model

_Domain = Annotated[str, Field(pattern=_DOMAIN, max_length=253)]
# RFC 2919 list-id: a dot-atom, written without the angle brackets.
_LIST_ID = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+$"


class ForwarderConfig(_Model):
    """A group or list whose record of the author's authentication the gateway trusts.

    Google Groups: `list_id = "emergency.paas.example"`, `arc_signer = "google.com"`,
    `authserv_id = "mx.google.com"`. A Mailman list behind its own MTA: `list_id`,
    `authserv_id` = that MTA's, and `dkim_domain` = the domain the list signs with.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,60}$")]
    list_id: Annotated[str, Field(pattern=_LIST_ID, max_length=255)] | None = None
    arc_signer: _Domain | None = None  # the d= of the ARC-Seal the forwarder adds
    authserv_id: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s;]+$")]
    dkim_domain: _Domain | None = None  # the d= the forwarder signs its copies with

    @field_validator("list_id", "arc_signer", "authserv_id", "dkim_domain", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().strip("<>").lower()
        return value

    @model_validator(mode="after")
    def _provable(self) -> ForwarderConfig:
        if self.list_id is None and self.arc_signer is None:
            raise ValueError("name the forwarder by 'list_id' and/or 'arc_signer'")
        if self.arc_signer is None and self.dkim_domain is None:
            raise ValueError(
                "give 'arc_signer' (its ARC seal) or 'dkim_domain' (its DKIM "
                "signature): without one, anyone could write its headers"
            )
        return self


class AnswersConfig(_Model):
    """How many automatic answers (acknowledgements) one address may get in a window."""

    per_address: int = Field(default=10, ge=1)
    window_s: float = Field(default=3600.0, gt=0)


def check_forwarders(
    forwarders: list[ForwarderConfig], authserv_id: str | None, verify_dkim: bool
) -> None:
    """A forwarder known only by its DKIM signature needs someone to verify that signature."""
    names = [f.name for f in forwarders]
    if len(set(names)) != len(names):
        raise ValueError("two forwarders have the same name")
    for f in forwarders:
        if f.arc_signer is None and not (authserv_id or verify_dkim):
            raise ValueError(
                f"forwarder {f.name!r}: 'dkim_domain' is only checked with "
                "'trusted_authserv_id' or 'verify_dkim'; or give 'arc_signer'"
            )
