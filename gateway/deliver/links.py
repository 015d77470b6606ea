"""Egress links as the outbox sees them: up, or down and waiting to be tried again.

A link (the homeserver, the mail relay, PagerDuty) is down when an attempt found it
unreachable (the adapter raised `LinkDown`) or, for a link with a connection of its own
(Matrix), while that connection is not up. While a link is down the outbox leaves its
entries where they are in line, counts no attempt, and dead-letters none of them: it tries
one round again after a backoff (doubling from `initial_s` to `max_s`), or as soon as the
link's own connection is back. Any answer from the peer, even a refusal, means it is up.
Pure bookkeeping on a monotonic clock: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gateway.domain import OutboxKind

_EGRESS_KINDS: Mapping[str, frozenset[OutboxKind]] = {
    "pager": frozenset(
        {OutboxKind.PAGE_TRIGGER, OutboxKind.PAGE_ACKNOWLEDGE, OutboxKind.PAGE_RESOLVE}
    ),
    "mail": frozenset({OutboxKind.MAIL_SEND}),
    "chat": frozenset({OutboxKind.CHAT_ANNOUNCE, OutboxKind.CHAT_SEND}),
}


@dataclass
class LinkGate:
    """One egress link: whether its entries may be tried now, and since when it is down."""

    name: str
    kinds: frozenset[OutboxKind]
    initial_s: float = 1.0
    max_s: float = 300.0
    connected: Callable[[], bool] | None = None  # the link's own connection state, if any
    clock: Callable[[], float] = time.monotonic
    down_since: float | None = None
    reason: str = ""
    _retry_at: float = 0.0
    _failures: int = 0
    _was_connected: bool = field(default=True, repr=False)

    def is_down(self) -> bool:
        """Down: unreachable at the last attempt, or its connection is not up."""
        return self.down_since is not None or not self._connection_up()

    def may_try(self) -> bool:
        """Whether a round may try this link's entries now."""
        if not self._connection_up():
            return False
        if self.down_since is None:
            return True
        return self.clock() >= self._retry_at

    def unreachable(self, reason: str) -> None:
        """An attempt could not reach the peer: wait before the next round."""
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
        self.reason = reason
        self._failures += 1
        delay = min(self.max_s, self.initial_s * 2.0 ** (self._failures - 1))
        self._retry_at = now + delay

    def answered(self) -> None:
        """The peer answered (delivered, or refused): the link is up."""
        self.down_since = None
        self.reason = ""
        self._failures = 0

    def state(self) -> str:
        """ "ok", "unreachable" (an attempt failed to reach it) or "disconnected"."""
        if not self._connection_up():
            return "disconnected"
        return "unreachable" if self.down_since is not None else "ok"

    def _connection_up(self) -> bool:
        if self.connected is None:
            return True
        up = self.connected()
        if up and not self._was_connected:
            # The connection is back: try at once, whatever the backoff said.
            self._retry_at = 0.0
            self._failures = 0
        self._was_connected = up
        return up


def egress_gates(
    configured: Iterable[str],
    initial_s: float,
    max_s: float,
    connected: Mapping[str, Callable[[], bool]] | None = None,
) -> list[LinkGate]:
    """A gate per configured egress ("pager", "mail", "chat"), with the connection state of
    those that have one (Matrix)."""
    connected = connected or {}
    return [
        LinkGate(name, _EGRESS_KINDS[name], initial_s, max_s, connected.get(name))
        for name in configured
        if name in _EGRESS_KINDS
    ]
