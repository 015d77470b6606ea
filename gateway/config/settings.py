"""The core's settings, derived from the configuration: what the pure pipeline, the sender
trust policy and the SLA planner need to know about this deployment. Pure: a Config in,
frozen settings out (the DKIM verifier, when configured, is built lazily here)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.config.model import Config
from gateway.plan.forwarder import Forwarder, ForwarderJudge, Lookup, forwarder_judge
from gateway.plan.pipeline import AnswerLimits, Settings
from gateway.plan.relay import ChatSettings
from gateway.plan.replies import Sender
from gateway.plan.sla import EscalationTarget, SlaSettings
from gateway.plan.storm import Limits
from gateway.plan.tokens import ThreadSigner
from gateway.plan.trust import TrustPolicy
from rules.types import Priority

if TYPE_CHECKING:  # dkimpy is imported only where DKIM checking is configured
    from gateway.parse.dkim_check import DkimResult


def chat_rooms(config: Config) -> dict[str, str]:
    """Report rooms and the mailbox kind each feeds."""
    m = config.matrix
    return {} if m is None else {r.room: r.mailbox for r in m.report_rooms}


def pipeline_settings(config: Config, thread_key: str | None = None) -> Settings:
    """The deployment facts the pure pipeline needs (`thread_key` signs our Message-IDs)."""
    address = config.mail_out.from_address
    domain = address.rpartition("@")[2]
    m = config.matrix
    chat = (
        None
        if m is None
        else ChatSettings(
            bot_user_id=m.user_id,
            incidents_room=m.incidents_room,
            report_rooms=chat_rooms(config),
            engineers=frozenset(m.engineers),
            min_power_level=m.min_power_level,
            verified_only=m.encryption == "on" and m.trust == "verified-only",
            verified_report_rooms=frozenset(
                r.room for r in m.report_rooms if r.verified_devices_only
            ),
        )
    )
    return Settings(
        sender=Sender(
            address=address,
            name=config.mail_out.from_name,
            msgid_domain=domain,
            loop_token=f"chatops-gateway; {domain}",
            signer=ThreadSigner(thread_key.encode(), domain) if thread_key else None,
        ),
        pager_source=config.pagerduty.source if config.pagerduty else "chatops-gateway",
        signature=config.mail_out.from_name,
        chat=chat,
        trust=trust_policy(config),
        limits=Limits(**config.limits.model_dump()),
        answers=AnswerLimits(config.answers.per_address, config.answers.window_s),
    )


def trust_policy(config: Config) -> TrustPolicy:
    """The sender-trust policy, with a DKIM check (real DNS) when configured."""
    t = config.trust
    if t.verify_dkim:
        # Lazy: dkimpy and its DNS resolver load only where DKIM is checked (start-up time).
        from gateway.parse.dkim_check import dkim_verifier  # noqa: PLC0415
    dkim = dkim_verifier() if t.verify_dkim else None
    return TrustPolicy(
        authserv_id=t.trusted_authserv_id,
        allow_domains=frozenset(t.allow_domains),
        allow_addresses=frozenset(t.allow_addresses),
        allow_all=t.allow_all,
        dkim=dkim,
        forwarded=forwarders_judge(config, None if dkim is None else _signer_of(dkim)),
    )


def _signer_of(check: Callable[[bytes], DkimResult]) -> Callable[[bytes], str | None]:
    """The signing domain alone, as the forwarder judge takes it (of a valid signature that
    covers every From and Subject and the whole body, gateway.parse.signed_headers)."""
    return lambda raw: check(raw).domain


def forwarders_judge(
    config: Config, dkim: Callable[[bytes], str | None] | None, lookup: Lookup | None = None
) -> ForwarderJudge:
    """The trusted forwarders' judge (gateway.plan.forwarder); `lookup` replaces real DNS."""
    t = config.trust
    return forwarder_judge(
        [
            Forwarder(f.name, f.authserv_id, f.list_id, f.arc_signer, f.dkim_domain)
            for f in t.forwarders
        ],
        mta_authserv_id=t.trusted_authserv_id,
        dkim=dkim,
        lookup=lookup,
    )


def sla_settings(config: Config, settings: Settings) -> SlaSettings:
    """The SLA planner's view of the `[sla]` and `[[escalation]]` sections."""
    s = config.sla
    steps = tuple(
        EscalationTarget(
            kind=step.kind,
            after=timedelta(minutes=step.after_minutes),
            route=f"escalation-{index + 1}" if step.kind == "page" else None,
            room=step.room,
            address=step.address,
        )
        for index, step in enumerate(config.escalation)
    )
    return SlaSettings(
        sender=settings.sender,
        pager_source=settings.pager_source,
        incidents_room=settings.chat.incidents_room if settings.chat else None,
        respond_warning=timedelta(minutes=s.respond_warning_minutes),
        update_warning=timedelta(minutes=s.update_warning_minutes),
        holding=frozenset(Priority(p) for p in s.holding_replies),
        escalate=frozenset(Priority(p) for p in s.escalate),
        escalation=steps,
        handover=frozenset(Priority(p) for p in s.handover_priorities),
        handover_at_close=s.handover_at_close,
        handover_after=(
            None if s.handover_after_hours is None else timedelta(hours=s.handover_after_hours)
        ),
        digest=s.digest,
    )
