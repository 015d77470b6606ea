"""Thread tokens: the references the gateway issues, so that only they can attach mail to an
incident.

Every Message-ID we send carries an HMAC-SHA256 tag over the incident number and a label:
`<inc42.ack7.tag@domain>`. A reply names one of those ids in In-Reply-To or References; only
an id whose tag verifies under our key names an incident. Incident numbers are small and
our labels predictable, so without the tag anyone could forge `In-Reply-To: <inc-42…>` and
inject into someone else's incident (a known weakness of helpdesks); with it they would have
to guess 128 bits.

Pure: the key is given (from a credential file, or generated once and kept in the store).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_TAG_BYTES = 16  # 128 bits: out of reach of guessing, short enough for a Message-ID
_LABEL = re.compile(r"[^a-z0-9.-]+")
_ISSUED = re.compile(r"^<inc(\d{1,12})\.([a-z0-9.-]{1,80})\.([a-z2-7]{26})@([^<>@\s]+)>$")
MIN_KEY_BYTES = 16


def new_key() -> str:
    """A fresh random key, as text (for the store's kv table or a credential file)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ThreadSigner:
    """Makes and checks the Message-IDs the gateway issues."""

    key: bytes
    domain: str

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"the threading key needs at least {MIN_KEY_BYTES} bytes")

    def _tag(self, incident_id: int, label: str) -> str:
        mac = hmac.new(
            self.key, f"inc{incident_id}.{label}@{self.domain}".encode(), hashlib.sha256
        ).digest()[:_TAG_BYTES]
        return base64.b32encode(mac).decode("ascii").rstrip("=").lower()

    def message_id(self, incident_id: int, label: str) -> str:
        """`<inc42.label.tag@domain>`; `label` must make the id unique (e.g. 'ack.7')."""
        clean = _LABEL.sub("-", label.lower()).strip("-.")[:80] or "m"
        return f"<inc{incident_id}.{clean}.{self._tag(incident_id, clean)}@{self.domain}>"

    def verify(self, message_id: str) -> int | None:
        """The incident a Message-ID we issued names; None for anything else or a bad tag."""
        match = _ISSUED.match(message_id.strip().lower())
        if match is None or match.group(4) != self.domain.lower():
            return None
        incident_id, label, tag = int(match.group(1)), match.group(2), match.group(3)
        if not hmac.compare_digest(tag, self._tag(incident_id, label)):
            return None
        return incident_id

    def issued(self, message_ids: tuple[str, ...]) -> tuple[int, ...]:
        """The incidents named by the ids among `message_ids` that we issued, in order."""
        found: dict[int, None] = {}
        for mid in message_ids:
            iid = self.verify(mid)
            if iid is not None:
                found[iid] = None
        return tuple(found)
