"""End-to-end encryption policy for chat, as values: which devices the bot trusts, and the
notice it posts for a message it could not decrypt.

Pure: the chat adapter (Matrix: adapters/matrix_crypto.py) asks `device_verdict` for every
device it has not yet decided on and applies the answer (verify or block) in its crypto
store, where the decision persists. It also says, on each decrypted message it hands the
core, which device sent it and whether that device is trusted (`ChatMessage.device`), so
that under `trust = "verified-only"` the core acts only on commands (and, where configured,
reports) from trusted devices (`untrusted_device_reason`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from gateway.domain import ChatDevice

TrustMode = Literal["tofu-engineers", "verified-only"]
Verdict = Literal["trust", "block"]


@dataclass(frozen=True)
class PinnedDevice:
    """A device an operator checked out of band (Element: Settings → Sessions)."""

    user_id: str
    device_id: str
    ed25519: str


@dataclass(frozen=True)
class DeviceFacts:
    """What the chat server told us about one device (its keys are signed by the device)."""

    user_id: str
    device_id: str
    ed25519: str


def device_verdict(
    mode: TrustMode,
    engineers: Collection[str],
    pinned: Collection[PinnedDevice],
    device: DeviceFacts,
) -> tuple[Verdict, str]:
    """Whether room keys may be shared with `device`, and why (for the log).

    A pinned device is trusted only with the fingerprint it was pinned with, in every mode.
    "tofu-engineers" trusts any other device of an allow-listed engineer the first time it is
    seen (the decision is then stored, so a later key change for that device is refused);
    "verified-only" trusts nothing that is not pinned. Everyone else is blocked: they receive
    nothing the bot sends in an encrypted room.
    """
    for pin in pinned:
        if (pin.user_id, pin.device_id) == (device.user_id, device.device_id):
            if pin.ed25519 == device.ed25519:
                return "trust", "pinned fingerprint matches"
            return "block", "fingerprint differs from the pinned one"
    if mode == "tofu-engineers" and device.user_id in engineers:
        return "trust", "engineer's device, trusted on first use"
    if mode == "verified-only":
        return "block", "not a pinned device (trust is verified-only)"
    return "block", "not an engineer's device"


def undecryptable_notice(sender: str, at: datetime) -> str:
    """The room notice for an event the bot could not decrypt (it never acts on one)."""
    when = at.astimezone(UTC).strftime("%H:%M UTC on %Y-%m-%d")
    return (
        f"I could not decrypt a message from {sender} at {when}; please check that my "
        f"device is verified. I have not acted on that message: send it again once my "
        f"device is trusted."
    )


def untrusted_device_reason(device: ChatDevice | None, what: str) -> str | None:
    """Why `what` ("commands", "reports") from this device is not acted on under
    `trust = "verified-only"`, or None when the device is trusted."""
    if device is None:
        return (
            f"Not acted on: with trust = verified-only I act only on {what} sent "
            "encrypted from a verified device, and this message was not encrypted."
        )
    if device.trusted:
        return None
    return (
        f"Not acted on: with trust = verified-only I act only on {what} from verified "
        f"devices, and your device {device.device_id} is not one of them. Send it from a "
        "verified device, or ask an operator to pin this one (trusted_devices)."
    )
