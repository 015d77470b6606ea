"""Where an automatic answer (an acknowledgement) to an email may go, and what it may say.

RFC 3834 §4: automatic responses go to the envelope sender (Return-Path), unless the
responder has reason to trust another address; From, Reply-To and the headers a list writes
for its author are the sender's own choice, so without authentication they would make the
gateway a relay that mails attacker text to anyone. The rules, decided from values (pure):

1. **Authenticated author**: the mail authenticates its author (DMARC / aligned DKIM or SPF
   at our trusted MTA, our own DKIM check, or a trusted forwarder's record of it —
   `gateway.plan.forwarder`): the answer goes to that author; a Reply-To is followed only within
   the same domain. The answer may repeat their subject.
2. **Otherwise the envelope sender**, if usable — but never for mail that came through a list
   or group, whose envelope is the list's bounce address: then nobody is answered
   automatically (the report still reaches an engineer). Answers to an address nobody
   authenticated do not repeat the subject or text, so a forged report cannot put words in
   a mailbox of someone else's choosing. With no authentication configured at all, the
   envelope sender that is also the From is as good as the gateway can know, and is
   answered in full (the behaviour of a gateway without checks).
3. **Never** a list or group address, a list's bounce/owner/request address, a mail system
   (MAILER-DAEMON, postmaster), one of our own addresses, or an address in a form that
   routes elsewhere or hides its target: `%`-hacks, `!` bang paths, source routes, quoted
   local parts, IP literals, a domain without a dot.

How many answers one address gets in a window is counted in the store (`gateway.store.answer_db`)
and limited in `gateway.plan.mail_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from gateway.parse.listmail import listish_local_part

__all__ = ["Answer", "answer_target", "usable_address"]

# Dot-atom local part without "%" and "!", and a host name with at least one dot.
_ADDRESS = re.compile(
    r"[A-Za-z0-9#$&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9#$&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
)
_SYSTEM_LOCALS = frozenset(
    {
        "mailerdaemon",
        "maildaemon",
        "postmaster",
        "mdaemon",
        "noreply",
        "donotreply",
        "bounce",
        "bounces",
        "abuse",
        "root",
    }
)


@dataclass(frozen=True)
class Answer:
    """Who gets the automatic answer (None: nobody), whether it may repeat the report, and why."""

    address: str | None
    echo: bool
    why: str


def usable_address(address: str | None) -> bool:
    """A plain address of a person's mailbox (rule 3's forms refused)."""
    if not address or len(address) > 254 or not _ADDRESS.fullmatch(address):
        return False
    local = address.rpartition("@")[0].lower()
    return re.sub(r"[-_.]", "", local.partition("+")[0]) not in _SYSTEM_LOCALS and (
        not listish_local_part(address)
    )


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def answer_target(
    *,
    author: str,
    reply_to: str | None,
    envelope_sender: str,
    authentic: bool | None,
    through_list: bool,
    list_addresses: Collection[str],
    own_addresses: Collection[str],
) -> Answer:
    """Where the acknowledgement of one email goes (see the module docstring)."""
    never = {a.lower() for a in (*list_addresses, *own_addresses)}

    def ok(address: str | None) -> bool:
        return usable_address(address) and (address or "").lower() not in never

    author, envelope = author.lower(), envelope_sender.strip().strip("<>").lower()
    if authentic is True and ok(author):
        if reply_to and ok(reply_to) and _domain(reply_to) == _domain(author):
            return Answer(reply_to.lower(), True, "Reply-To in the authenticated author's domain")
        return Answer(author, True, "the authenticated author")
    if through_list:
        return Answer(
            None,
            False,
            "the author behind the list is not authenticated, and the envelope is the list's",
        )
    if not ok(envelope):
        return Answer(
            None,
            False,
            "no usable address: the sender is not authenticated and "
            "the envelope sender is unusable",
        )
    echo = authentic is None and envelope == author
    return Answer(
        envelope,
        echo,
        "the envelope sender (RFC 3834 §4)"
        + ("" if echo else ", without repeating an unauthenticated report"),
    )
