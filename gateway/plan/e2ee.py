"""End-to-end encryption policy for Matrix, as values: which devices the bot trusts, and the
notice it posts for a message it could not decrypt.

Pure: the Matrix adapter asks `device_verdict` for every device it has not yet decided on and
applies the answer (verify or block) in matrix-nio's crypto store, where the decision persists.
It also records on each decrypted event which device sent it and whether that device is
trusted (`SENDER_DEVICE`), so that under `trust = "verified-only"` the core acts only on
commands (and, where configured, reports) from trusted devices (`untrusted_device_reason`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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
    """What the homeserver told us about one device (its keys are signed by the device)."""

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


# The key under which the Matrix adapter records, in a decrypted event it hands to the core,
# which device sent it and whether that device is trusted. Only the adapter writes it: it
# overwrites it on every decrypted event and removes it from every plaintext one.
SENDER_DEVICE = "gateway.sender_device"


@dataclass(frozen=True)
class SenderDevice:
    """Which device sent a decrypted event, and whether the bot trusts it: verified by the
    trust policy, and the event's session keys are that device's own (not forwarded)."""

    device_id: str
    trusted: bool


def sender_device(event: Mapping[str, Any]) -> SenderDevice | None:
    """The adapter's record of the sending device; None for a plaintext event."""
    found = event.get(SENDER_DEVICE)
    if not isinstance(found, Mapping):
        return None
    return SenderDevice(str(found.get("device_id") or "?"), found.get("trusted") is True)


def untrusted_device_reason(device: SenderDevice | None, what: str) -> str | None:
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
