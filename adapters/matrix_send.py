"""Sending to Matrix: the core's neutral `ChatPost` as an `m.notice` event, one send bounded
by a timeout, and the homeserver's error values and the HTTP library's errors translated
into the core's LinkDown / TransientError / PermanentError at the boundary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError
from nio import (
    AsyncClient,
    ErrorResponse,
    LocalProtocolError,
    OlmTrustError,
    RoomSendResponse,
    SendRetryError,
)

from gateway.domain import ChatPost
from gateway.ports import LinkDown, PermanentError, TransientError

if TYPE_CHECKING:
    from adapters.matrix_crypto import MatrixCrypto

# A send takes milliseconds on a working homeserver; a hung one must not hold the outbox's
# round (and the pages in it) for long.
SEND_TIMEOUT_S = 10.0


def notice_content(post: ChatPost) -> dict[str, Any]:
    """An m.notice (bots speak in notices), in a thread when a root is given."""
    content: dict[str, Any] = {"msgtype": "m.notice", "body": post.body}
    if post.thread_root:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": post.thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": post.reply_to or post.thread_root},
        }
    return content


async def send_content(
    client: AsyncClient | None,
    connected: bool,
    crypto: MatrixCrypto | None,
    room_id: str,
    content: Mapping[str, Any],
    txn_id: str,
) -> Mapping[str, Any]:
    """Send one event; the same txn_id (on the same token) is delivered once."""
    if client is None or not client.access_token or not connected:
        # Not logged in, or our rooms not joined yet: the outbox waits for the link.
        raise LinkDown("not connected to the homeserver")
    try:
        # With encryption on, keys go only to devices the trust policy verified; a device
        # not yet decided on fails this send, and the next sync decides on it.
        resp = await asyncio.wait_for(
            client.room_send(
                room_id,
                "m.room.message",
                dict(content),
                tx_id=txn_id,
                ignore_unverified_devices=crypto is None,
            ),
            SEND_TIMEOUT_S,
        )
    except (ClientError, TimeoutError, OSError) as exc:
        raise LinkDown(f"homeserver unreachable ({type(exc).__name__})") from None
    except (LocalProtocolError, SendRetryError, OlmTrustError) as exc:
        # A device not decided on yet (OlmUnverifiedDeviceError: decide now, the retry
        # goes through), or a room whose state has not arrived.
        if crypto is not None:
            crypto.apply_trust(client)
        raise TransientError(f"cannot encrypt yet ({type(exc).__name__})") from None
    if isinstance(resp, RoomSendResponse):
        return {"event_id": resp.event_id}
    if not isinstance(resp, ErrorResponse):
        raise TypeError(f"expected ErrorResponse, got {type(resp).__name__}")
    raise classify(resp)


def classify(resp: ErrorResponse) -> TransientError | PermanentError:
    """A homeserver error as the core's error: retry later, or retrying cannot help."""
    code = str(resp.status_code or "")
    if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
        return TransientError("M_UNKNOWN_TOKEN")
    if code == "M_LIMIT_EXCEEDED":
        retry_ms = getattr(resp, "retry_after_ms", None)
        return TransientError("M_LIMIT_EXCEEDED", retry_ms / 1000 if retry_ms else None)
    if code == "M_FORBIDDEN":
        # Usually "not in room": an admin can fix that, so retry until the dead-letter cap.
        return TransientError(f"{code}: {str(resp.message)[:200]}")
    if code in ("M_NOT_FOUND", "M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE"):
        return PermanentError(f"{code}: {str(resp.message)[:200]}")
    return TransientError(code or "homeserver error")
