"""Matrix through matrix-nio: login that keeps one device, our own sync loop, and sending.

The sync loop is ours, not nio's `sync_forever`: every batch's message events in the rooms
we watch are handed to the core (which commits them to the durable inbox) before the batch's
`next_batch` token is persisted, so a crash replays at most one batch and the inbox's
per-event key makes that harmless. Errors back off exponentially to a cap and reset on
success; an unknown token triggers a fresh login on the same device; bad credentials park
the link in a state the health check can show instead of hammering the homeserver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import ClientError
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinError,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    OlmTrustError,
    RoomGetStateResponse,
    RoomMessagesError,
    RoomSendResponse,
    SendRetryError,
    SyncError,
    SyncResponse,
    WhoamiResponse,
)

from adapters.matrix_crypto import with_sender_device
from adapters.matrix_undecryptable import Pending, Undecryptable, notice_for, room_is_encrypted
from gateway.domain import ChatPost
from gateway.ports import KeyValue, LinkDown, PermanentError, TransientError
from gateway.run import metrics
from gateway.run.supervise import backoff_s

if TYPE_CHECKING:
    from adapters.matrix_crypto import MatrixCrypto

log = structlog.get_logger("adapters.matrix")


@dataclass(frozen=True)
class RoomEvent:
    """A message event from a watched room, with what the core needs to authorise it."""

    room_id: str
    event: Mapping[str, Any]
    sender_power: int


Deliver = Callable[[list[RoomEvent]], Awaitable[None]]


JOIN_RETRY_S = 60.0  # how often a configured room we are not in is tried again
# A send takes milliseconds on a working homeserver; a hung one must not hold the outbox's
# round (and the pages in it) for long.
SEND_TIMEOUT_S = 10.0


class BadCredentials(Exception):
    """The homeserver refused our token or password."""


def _filter(rooms: list[str], limit: int) -> dict[str, Any]:
    return {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "rooms": rooms,
            # A large limit so a busy room is not cut short ("limited"); backfill covers the rest.
            # m.room.encrypted too: what we cannot read is never dropped in silence.
            "timeline": {
                "limit": limit,
                "types": ["m.room.message", "m.room.encrypted", "m.room.encryption"],
            },
            "state": {"lazy_load_members": True},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        },
    }


class MatrixLink:
    """Owns the nio client for one bot account."""

    def __init__(
        self,
        *,
        homeserver: str,
        user_id: str,
        rooms: list[str],
        store: KeyValue,
        access_token: str | None = None,
        password: str | None = None,
        device_id: str | None = None,
        device_name: str = "chatops-gateway",
        sync_timeout_s: float = 30.0,
        backoff_max_s: float = 30.0,
        crypto: MatrixCrypto | None = None,
        undecryptable_wait_s: float = 30.0,
    ) -> None:
        self.state = "starting"
        self._homeserver, self._user_id = homeserver, user_id
        self._rooms = rooms
        self._kv = store
        self._deliver: Deliver | None = None
        self._token, self._password = access_token, password
        self._device_id, self._device_name = device_id, device_name
        self._sync_timeout_s = sync_timeout_s
        self._backoff_max_s = backoff_max_s
        self._client: AsyncClient | None = None
        self._crypto = crypto
        self._undecryptable = Undecryptable(store, undecryptable_wait_s)
        self.encrypted_rooms: list[str] = []
        self._blind_rooms: list[str] = []
        self.unjoined: dict[str, str] = {}  # configured rooms we are not in, and why
        self._join_retry_at = 0.0
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"MatrixLink({self._user_id!r} on {self._homeserver!r}, state={self.state!r})"

    def deliver_to(self, deliver: Deliver) -> None:
        """Where each batch's events go; it must commit them before returning."""
        self._deliver = deliver

    def _new_client(self) -> AsyncClient:
        # nio must not retry on its own: 429s and timeouts come back to our loop, which backs
        # off with a cap and keeps the state visible.
        settings: dict[str, Any] = {
            "max_limit_exceeded": 0,
            "max_timeouts": 0,
            # A hung homeserver is noticed 10 s after a long-poll
            # should have returned (not 30: health waits for it).
            "request_timeout": self._sync_timeout_s + 10,
            "store_sync_tokens": False,
        }
        if self._crypto is not None:
            return AsyncClient(
                self._homeserver,
                self._user_id,
                store_path=str(self._crypto.store_dir),
                config=self._crypto.client_config(**settings),
            )
        config = AsyncClientConfig(**settings, encryption_enabled=False)
        return AsyncClient(self._homeserver, self._user_id, config=config)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- login --------------------------------------------------------------------------------
    # C901: every way a homeserver answers a login (token, password, errors), side by side.
    async def _login(self, client: AsyncClient, *, fresh: bool = False) -> None:  # noqa: C901
        token = self._token or (None if fresh else await self._kv.kv_get("matrix.access_token"))
        device = self._device_id or await self._kv.kv_get("matrix.device_id")
        if device and self._crypto and not self._crypto.has_store(self._user_id, device):
            device, token = self._lost_keys(device)
        if token:
            client.access_token = token  # whoami first: the crypto store is keyed by device
            who = await client.whoami()
            if isinstance(who, WhoamiResponse):
                device = device or who.device_id
                if who.device_id and not await self._kv.kv_get("matrix.device_id"):
                    await self._kv.kv_set("matrix.device_id", who.device_id)
                self._prepare_store(device)
                client.restore_login(self._user_id, device or "", token)
                return
            if who.status_code not in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise _classify(who)
            if self._password is None:
                raise BadCredentials("the access token was refused")
        if self._password is None:
            raise BadCredentials("no usable access token and no password")
        if device:
            client.device_id = device  # nio logs in as this device when set
        self._prepare_store(device)
        resp = await client.login(self._password, device_name=self._device_name)
        if not isinstance(resp, LoginResponse):
            if resp.status_code in ("M_FORBIDDEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"):
                raise BadCredentials("the homeserver refused the password")
            raise _classify(resp)
        # Keep the device and token: a retried send with the same transaction id is only
        # de-duplicated by the homeserver for the same access token.
        await self._kv.kv_set("matrix.device_id", resp.device_id)
        await self._kv.kv_set("matrix.access_token", resp.access_token)
        self._prepare_store(resp.device_id)

    def _prepare_store(self, device: str | None) -> None:
        if self._crypto is not None:
            self._crypto.prepare_dir()
            if device:
                self._crypto.prepare(self._user_id, device)

    def _lost_keys(self, device: str) -> tuple[None, None]:
        # The device's keys are gone: reusing its id would clash with the keys the homeserver
        # holds for it. Log in as a new device (docs/matrix-e2ee.md, "Restore").
        log.error("matrix.e2ee.store_missing", device_id=device)
        if self._device_id:
            raise BadCredentials("the configured device_id has no crypto store")
        return None, None

    # -- rooms ------------------------------------------------------------------------------
    async def _join(self, client: AsyncClient, rooms: list[str] | None = None) -> None:
        """Join the configured rooms (or those given); what cannot be joined is remembered,
        shown as "degraded", and joined again on an invitation or every JOIN_RETRY_S."""
        for room in self._rooms if rooms is None else rooms:
            resp = await client.join(room)
            if isinstance(resp, JoinError):
                if room not in self.unjoined:
                    log.error("matrix.join_failed", room_id=room, error=resp.status_code)
                self.unjoined[room] = str(resp.status_code or "join refused")
            elif room in self.unjoined:
                del self.unjoined[room]
                log.info("matrix.joined", room_id=room)
        self._join_retry_at = asyncio.get_running_loop().time() + JOIN_RETRY_S

    async def _join_missing(self, client: AsyncClient, resp: SyncResponse) -> None:
        """Join a configured room we are not in as soon as we are invited (only configured
        rooms: an invitation elsewhere is ignored), else now and then."""
        if not self.unjoined:
            return
        invited = [room for room in resp.rooms.invite if room in self.unjoined]
        if invited:
            await self._join(client, invited)
        elif asyncio.get_running_loop().time() >= self._join_retry_at:
            await self._join(client, list(self.unjoined))

    def problem(self) -> str:
        """What is wrong while degraded: the configured rooms the bot is not in."""
        if not self.unjoined:
            return ""
        rooms = ", ".join(f"{room} ({why})" for room, why in sorted(self.unjoined.items()))
        return f"not in {rooms}: invite the bot"

    # -- the sync loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Log in, join our rooms, and sync until cancelled."""
        failures = 0
        fresh_login = False
        while True:
            try:
                await self._session(fresh_login)
            except asyncio.CancelledError:
                raise
            except BadCredentials as exc:
                self.state = "bad_credentials"
                self.connected.clear()
                log.error("matrix.bad_credentials", reason=str(exc))
                delay = 300.0
            except (TransientError, ClientError, TimeoutError, OSError) as exc:
                failures += 1
                self.state = "backing_off"
                self.connected.clear()
                fresh_login = isinstance(exc, TransientError) and exc.reason == "M_UNKNOWN_TOKEN"
                delay = backoff_s(failures, 0.5, self._backoff_max_s, max_doublings=10)
                if isinstance(exc, TransientError) and exc.retry_after_s:
                    delay = max(delay, exc.retry_after_s)  # M_LIMIT_EXCEEDED: as told
                log.warning(
                    "matrix.backing_off",
                    error=getattr(exc, "reason", type(exc).__name__),
                    delay_s=round(delay, 2),
                )
            except Exception:
                # A bug here must not take the whole daemon down: report it, back off, retry.
                failures += 1
                self.state = "backing_off"
                self.connected.clear()
                delay = self._backoff_max_s
                log.exception("matrix.sync_crashed", delay_s=delay)
            else:
                failures = 0
                continue
            metrics.RECONNECTS.inc(component="matrix")
            await asyncio.sleep(delay)

    async def _session(self, fresh_login: bool) -> None:
        if self._client is None:
            self._client = self._new_client()
        client = self._client
        await self._login(client, fresh=fresh_login)
        await self._join(client)
        await self._check_encryption(client)
        since = await self._kv.kv_get("matrix.next_batch")
        if since is None:
            # First start: skip history, begin from now.
            first = await client.sync(timeout=0, sync_filter=_filter(self._rooms, 0))
            since = self._checked(first).next_batch
            await self._kv.kv_set("matrix.next_batch", since)
        # Logged in, joined, and reading from `since` on: whatever is said in the rooms from
        # now is seen, and sends may go without waiting for a long-poll to return.
        self.state = self._up_state()
        self.connected.set()
        while True:
            resp = self._checked(
                await client.sync(
                    timeout=int(self._sync_timeout_s * 1000),
                    since=since,
                    sync_filter=_filter(self._rooms, 500),
                )
            )
            await self._join_missing(client, resp)
            self.state = self._up_state()
            self.connected.set()
            if self._crypto is not None:
                await self._crypto.key_traffic(client)
            events = await self._events(client, resp)
            if events and self._deliver is not None:
                await self._deliver(events)
            since = resp.next_batch
            await self._kv.kv_set("matrix.next_batch", since)
            await self._retry_undecrypted(client)

    def _up_state(self) -> str:
        # Encrypted rooms without encryption: connected but blind there, and health says so;
        # a configured room we could not join: connected, but degraded.
        if self._blind_rooms:
            return "needs_e2ee"
        return "degraded" if self.unjoined else "connected"

    async def _check_encryption(self, client: AsyncClient) -> None:
        if self._crypto is not None:
            self.encrypted_rooms = await self._crypto.load_rooms(client, self._rooms)
            await self._crypto.key_traffic(client)
            return
        self.encrypted_rooms = []
        for room_id in self._rooms:
            resp = await client.room_get_state(room_id)
            if isinstance(resp, RoomGetStateResponse) and room_is_encrypted(resp.events):
                self.encrypted_rooms.append(room_id)
                log.error("matrix.encrypted_room_without_e2ee", room_id=room_id)
        self._blind_rooms = list(self.encrypted_rooms)

    async def _undecrypted(self, client: AsyncClient, room_id: str, source: dict[str, Any]) -> None:
        if not await self._undecryptable.add(room_id, source):
            return
        if self._crypto is None:
            if room_id not in self._blind_rooms:  # encryption was turned on since we started
                self._blind_rooms.append(room_id)
                self.state = self._up_state()
            return
        event = MegolmEvent.from_dict(source)
        if isinstance(event, MegolmEvent):
            event.room_id = room_id
            await self._crypto.request_key(client, event)

    async def _retry_undecrypted(self, client: AsyncClient) -> None:
        """Deliver what decrypts now; post the notice for what is still unreadable after the
        wait. Never guessed at: an unreadable command is not acted on."""
        for item in await self._undecryptable.waiting():
            plain = (
                self._crypto.try_decrypt(client, item.source, item.room_id)
                if self._crypto is not None
                else None
            )
            if plain is not None and plain.get("type") == "m.room.message":
                await self._late(client, item, plain)
            elif self._undecryptable.overdue(item):
                content, txn_id = notice_for(item)
                try:
                    await self._send_content(item.room_id, content, txn_id)
                except (TransientError, PermanentError) as exc:
                    log.warning(
                        "matrix.undecryptable_notice_failed", room_id=item.room_id, error=str(exc)
                    )
                    continue
                await self._undecryptable.settle(item, "noticed")

    async def _late(self, client: AsyncClient, item: Pending, plain: dict[str, Any]) -> None:
        room = client.rooms.get(item.room_id)
        power = room.power_levels.get_user_level(str(plain.get("sender", ""))) if room else 0
        if self._deliver is not None:
            await self._deliver([RoomEvent(item.room_id, plain, int(power))])
        await self._undecryptable.settle(item, "decrypted")

    def _checked(self, resp: object) -> SyncResponse:
        if isinstance(resp, SyncResponse):
            return resp
        if not isinstance(resp, SyncError):
            raise TypeError(f"expected SyncError, got {type(resp).__name__}")
        raise _classify(resp)

    async def _events(self, client: AsyncClient, resp: SyncResponse) -> list[RoomEvent]:
        out: list[RoomEvent] = []
        for room_id, info in resp.rooms.join.items():
            if room_id not in self._rooms:
                continue
            sources = [with_sender_device(client, room_id, e) for e in info.timeline.events]
            if info.timeline.limited and info.timeline.prev_batch:
                sources = await self._backfill(client, room_id, info.timeline.prev_batch) + sources
            room = client.rooms.get(room_id)
            for source in sources:
                if source.get("type") == "m.room.encrypted":
                    await self._undecrypted(client, room_id, source)
                    continue
                if source.get("type") != "m.room.message":
                    continue
                sender = str(source.get("sender", ""))
                power = room.power_levels.get_user_level(sender) if room else 0
                out.append(RoomEvent(room_id, source, int(power)))
        return out

    async def _backfill(
        self, client: AsyncClient, room_id: str, token: str
    ) -> list[dict[str, Any]]:
        # The timeline was cut short: page back for what we missed. Events seen before are
        # harmless (the inbox keys every event by its id), so over-fetching is safe.
        older: list[dict[str, Any]] = []
        for _ in range(5):
            page = await client.room_messages(room_id, start=token, limit=100)
            if isinstance(page, RoomMessagesError) or not page.chunk:
                break
            older = [with_sender_device(client, room_id, e) for e in reversed(page.chunk)] + older
            if not page.end:
                break
            token = page.end
        log.warning("matrix.timeline_backfilled", room_id=room_id, events=len(older))
        return older

    # -- sending ----------------------------------------------------------------------------
    async def send(self, post: ChatPost, txn_id: str) -> Mapping[str, Any]:
        """Post the core's message as a notice; the same txn_id is delivered once."""
        return await self._send_content(post.room_id, notice_content(post), txn_id)

    async def _send_content(
        self, room_id: str, content: Mapping[str, Any], txn_id: str
    ) -> Mapping[str, Any]:
        """Send one event; the same txn_id (on the same token) is delivered once."""
        client = self._client
        if client is None or not client.access_token or not self.connected.is_set():
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
                    ignore_unverified_devices=self._crypto is None,
                ),
                SEND_TIMEOUT_S,
            )
        except (ClientError, TimeoutError, OSError) as exc:
            raise LinkDown(f"homeserver unreachable ({type(exc).__name__})") from None
        except (LocalProtocolError, SendRetryError, OlmTrustError) as exc:
            # A device not decided on yet (OlmUnverifiedDeviceError: decide now, the retry
            # goes through), or a room whose state has not arrived.
            if self._crypto is not None:
                self._crypto.apply_trust(client)
            raise TransientError(f"cannot encrypt yet ({type(exc).__name__})") from None
        if isinstance(resp, RoomSendResponse):
            return {"event_id": resp.event_id}
        if not isinstance(resp, ErrorResponse):
            raise TypeError(f"expected ErrorResponse, got {type(resp).__name__}")
        raise _classify(resp)


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


def _classify(resp: ErrorResponse) -> TransientError | PermanentError:
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
