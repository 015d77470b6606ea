"""IMAP intake bookkeeping: the persisted cursor per folder and what to scan next.

Pure decisions, no I/O. The adapter SELECTs the folder, asks `plan_scan` which UIDs to look
at, fetches them with BODY.PEEK[], commits them to the inbox, marks them, and only then
stores the advanced cursor. A crash anywhere in between repeats work but loses nothing: a
message fetched again is recognised by the inbox's re-send key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def cursor_key(name: str, folder: str) -> str:
    """The key-value entry holding one configured mailbox's cursor for one folder."""
    return f"imap.{name}.{folder}.cursor"


@dataclass(frozen=True)
class Cursor:
    """How far a folder has been processed: UIDs are only comparable within one UIDVALIDITY."""

    uidvalidity: int
    last_uid: int
    at: datetime  # when the cursor last advanced (bounds a re-scan after a UIDVALIDITY change)

    def dumps(self) -> str:
        """The stored form."""
        return json.dumps(
            {"uidvalidity": self.uidvalidity, "last_uid": self.last_uid, "at": self.at.isoformat()}
        )

    @classmethod
    def loads(cls, text: str | None) -> Cursor | None:
        """The stored form read back; None when absent or unreadable (treated as a first start)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                int(data["uidvalidity"]), int(data["last_uid"]), datetime.fromisoformat(data["at"])
            )
        except (ValueError, KeyError, TypeError):
            return None

    def advanced(self, uids: Iterable[int], now: datetime) -> Cursor:
        """The cursor after `uids` were committed and marked."""
        top = max(uids, default=self.last_uid)
        return (
            Cursor(self.uidvalidity, max(top, self.last_uid), now) if top > self.last_uid else self
        )


@dataclass(frozen=True)
class Scan:
    """A UID SEARCH to run, the smallest UID that counts as new, and why."""

    criteria: str
    min_uid: int
    reason: str  # "new" | "first_start" | "uidvalidity_changed"

    def new(self, found: Iterable[int]) -> list[int]:
        """The UIDs to process, ascending. `UID SEARCH UID n:*` (like `UID FETCH n:*`) returns
        the last message even when n is past the highest UID, so filter on uid >= n."""
        return sorted({uid for uid in found if uid >= self.min_uid})


def imap_date(day: date) -> str:
    """A date in IMAP SEARCH form (01-Feb-2026), independent of the locale."""
    return f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year}"


def plan_scan(stored: Cursor | None, uidvalidity: int) -> Scan:
    """What to look at after SELECT.

    - Same UIDVALIDITY: everything above the last processed UID (catch-up after downtime and
      each push alike).
    - No cursor yet (first start): the unseen messages; read mail is history, not a backlog.
    - UIDVALIDITY changed (folder rebuilt or migrated: old UIDs mean nothing): the unseen
      messages and everything that arrived since the day before the cursor last advanced;
      what was processed already is recognised by its Message-ID and not processed again.
    """
    if stored is None:
        return Scan("UNSEEN", 1, "first_start")
    if stored.uidvalidity == uidvalidity:
        return Scan(f"UID {stored.last_uid + 1}:*", stored.last_uid + 1, "new")
    since = imap_date(stored.at.date() - timedelta(days=1))
    return Scan(f"OR UNSEEN SINCE {since}", 1, "uidvalidity_changed")


def chunks(uids: Sequence[int], size: int) -> Iterator[list[int]]:
    """UIDs in fetch-sized batches, in order."""
    for start in range(0, len(uids), size):
        yield list(uids[start : start + size])


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set of UIDs, with ranges compressed (1:3,7)."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    start = prev = None
    for uid in ordered:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def envelope_sender(raw: bytes) -> str:
    """The envelope sender of a message read from a mailbox: Return-Path (set by the
    delivering server; `<>` stays empty, so bounces are still recognised), else From."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw, headersonly=True)
    return_path = headers.get("Return-Path")
    if return_path is not None:
        value = str(return_path).strip()
        if value in ("<>", ""):
            return ""
        return value.strip("<>").strip()
    addresses = getaddresses([str(v) for v in headers.get_all("From", [])])
    return next((addr for _, addr in addresses if addr), "")
