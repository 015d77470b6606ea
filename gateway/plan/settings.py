"""What planning needs to know about this deployment (`Settings`): who we are when we write
mail, the chat rooms, the sender trust policy and the limits; built from the configuration
by gateway.config.settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from gateway.plan.storm import Limits
from gateway.plan.trust import TrustPolicy

TEXT_LIMIT = 4000  # how much of a message's text an incident's record and ticket keep


@dataclass(frozen=True)
class AnswerLimits:
    """At most `per_address` automatic answers to one address in `window_s` (the store counts)."""

    per_address: int = 10
    window_s: float = 3600.0


@dataclass(frozen=True)
class Settings:
    """What the pipeline needs to know about this deployment."""

    sender: Sender
    pager_source: str
    signature: str
    chat: ChatSettings | None = None
    trust: TrustPolicy = field(default_factory=TrustPolicy)  # empty allow-list: nobody pages
    limits: Limits = field(default_factory=Limits)
    answers: AnswerLimits = field(default_factory=AnswerLimits)
