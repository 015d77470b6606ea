"""Webhook intake in the core: alert notifications and PagerDuty events into the durable inbox.

Like mail, a webhook is answered 2xx only after it is committed; the re-send key makes a
retried request harmless: the same body from the same alert source, or the same PagerDuty
event id (the persisted set of event ids seen), is accepted again but processed once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.alerts import AlertNotification
from gateway.domain import Accepted, Channel, NewMessage
from gateway.ports import Store
from gateway.run.worker import Clock, utcnow
from rules.types import Mailbox

if TYPE_CHECKING:  # its pydantic models are built at import: loaded only for a webhook
    from gateway.parse.pagerduty_events import PagerDutyEvent

PAGERDUTY_SOURCE = "pagerduty"


def alert_resend_key(source: str, body: bytes) -> str:
    """The same raw body from the same source: one notification, sent again."""
    return "alert:" + hashlib.sha256(source.encode() + b"\0" + body).hexdigest()


class AlertIntake:
    """Accepts decoded webhooks into the durable inbox and wakes the inbox worker."""

    def __init__(
        self, store: Store, on_accepted: Callable[[], None], clock: Clock = utcnow
    ) -> None:
        self._store = store
        self._on_accepted = on_accepted
        self._clock = clock

    async def accept_alert(
        self, notification: AlertNotification, body: bytes, timeout_s: float | None = None
    ) -> Accepted:
        """Commit one notification (`body`: the raw request, for the re-send key)."""
        accepted = await self._store.accept(
            NewMessage(
                channel=Channel.WEBHOOK,
                mailbox=Mailbox.EMERGENCY,
                mail_from=f"alerts:{notification.source}",
                rcpt_to=(notification.kind.value,),
                raw=notification.to_json(),
                dedup_key=alert_resend_key(notification.source, body),
                received_at=self._clock(),
            ),
            timeout_s,
        )
        if not accepted.duplicate:
            self._on_accepted()
        return accepted

    async def accept_pagerduty(
        self, event: PagerDutyEvent, timeout_s: float | None = None
    ) -> Accepted:
        """Commit one PagerDuty event, keyed by its id (a replay is a duplicate)."""
        accepted = await self._store.accept(
            NewMessage(
                channel=Channel.WEBHOOK,
                mailbox=Mailbox.EMERGENCY,
                mail_from=PAGERDUTY_SOURCE,
                rcpt_to=(PAGERDUTY_SOURCE,),
                raw=event.to_json(),
                dedup_key=f"pd:{event.id}",
                received_at=self._clock(),
            ),
            timeout_s,
        )
        if not accepted.duplicate:
            self._on_accepted()
        return accepted
