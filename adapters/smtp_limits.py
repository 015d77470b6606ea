"""Bounds on what one SMTP client can make the listener spend: the limits, the per-client
connection count and the shared budget of DATA bytes held in memory.

Modelled on Postfix: `smtpd_junk_command_limit` (NOOP, RSET, VRFY, HELP... without mail),
`smtpd_hard_error_limit` (replies of 4xx/5xx), `smtpd_client_connection_count_limit`. A
session past a budget gets 421 and is hung up on; nothing in these budgets is given back by
keep-alive commands, so a client that never sends mail cannot hold a slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Commands that do not move a mail transaction forward (RFC 5321 4.1.1.9 NOOP, .5 RSET,
# .6 VRFY, .7 EXPN, .8 HELP). A repeated HELO/EHLO counts as well.
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})
TOO_MUCH_JUNK = b"421 4.7.0 Too many commands without mail, closing connection\r\n"
TOO_MANY_ERRORS = b"421 4.7.0 Too many errors, closing connection\r\n"
TOO_LONG = b"421 4.4.2 Session too long, closing connection\r\n"
TOO_MANY_FROM_CLIENT = b"421 4.7.0 Too many connections from your address\r\n"
NO_ROOM = "452 4.3.1 Insufficient system storage, please try again later"


@dataclass(frozen=True)
class SmtpLimits:
    """Per-session and per-client bounds (the [smtp] settings of the same names)."""

    max_junk_commands: int = 100  # NOOP/RSET/VRFY/EXPN/HELP/repeated EHLO per session
    max_errors: int = 20  # 4xx/5xx replies per session
    max_connections_per_client: int = 50  # per remote IP address
    max_session_s: float = 1800.0  # however busy, a session ends after this long
    max_data_bytes_in_flight: int = 64 * 1024 * 1024  # DATA bytes held by all sessions


class ClientSlots:
    """Open connections per remote address."""

    def __init__(self, per_client: int) -> None:
        self._per_client = per_client
        self._open: Counter[str] = Counter()

    def take(self, client: str) -> bool:
        """Count a new connection from `client`; False (and nothing counted) when it has
        its share already."""
        if self._open[client] >= self._per_client:
            return False
        self._open[client] += 1
        return True

    def give_back(self, client: str) -> None:
        """A connection from `client` ended."""
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class DataBudget:
    """The DATA bytes all sessions together may hold in memory at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        """Take `size` more bytes; False (nothing taken) when that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        """Give back bytes taken with `reserve`."""
        self.used -= size
