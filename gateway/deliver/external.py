"""Wiring the external trackers: the outbox handlers for the ticket backend and status page
that gateway.app built from the configuration, and the mirror settings the inbox worker uses.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.model import Config
from gateway.deliver.mirror_egress import statuspage_handlers, ticket_handlers
from gateway.deliver.outbox import Handler
from gateway.domain import OutboxKind
from gateway.plan.mirror import MirrorSettings, SecurityContacts, StatuspageSettings
from gateway.plan.replies import Sender
from gateway.ports import StatusPage, Store, TicketBackend
from rules.book import Action, Rulebook
from rules.types import Priority

HandlerFactory = Callable[[str], dict[OutboxKind, Handler]]


def security_rooms(config: Config) -> list[str]:
    """Rooms the bot joins only to post security notices."""
    room = config.security.room if config.security else None
    return [room] if room else []


def mirror_settings(config: Config, book: Rulebook, sender: Sender) -> MirrorSettings:
    """What the inbox worker mirrors, from the configuration and the rulebook (`sender`:
    the one the pipeline uses, so security notices are written like every other mail)."""
    sp = config.statuspage
    sec = config.security
    return MirrorSettings(
        external_tickets=config.tickets.backend != "builtin",
        escalating_rules=frozenset(
            r.id for r in book.rules if Action.SECURITY_ESCALATION in r.actions
        ),
        security=SecurityContacts(sec.email, sec.room) if sec else None,
        statuspage=StatuspageSettings(dict(sp.components), Priority(sp.min_priority))
        if sp
        else None,
        sender=sender,
    )


def mirror_handlers(
    store: Store, tickets: TicketBackend | None, page: StatusPage | None, page_id: str
) -> HandlerFactory:
    """The outbox handlers for the configured tracker and status page, given the instance
    id (known once the store is open)."""

    def make(prefix: str) -> dict[OutboxKind, Handler]:
        handlers: dict[OutboxKind, Handler] = {}
        if tickets is not None:
            handlers.update(ticket_handlers(tickets, store, prefix))
        if page is not None:
            handlers.update(statuspage_handlers(page, page_id, store))
        return handlers

    return make
