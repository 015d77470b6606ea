"""Matrix through matrix-nio: the link for one bot account, and our own sync loop.

The sync loop is ours, not nio's `sync_forever`: every batch's message events in the rooms
we watch are translated into the core's neutral ChatMessage (adapters.matrix_events) and
handed to the core (which commits them to the durable inbox) before the batch's
`next_batch` token is persisted, so a crash replays at most one batch and the inbox's
per-event key makes that harmless. Errors back off exponentially to a cap and reset on
success; an unknown token triggers a fresh login on the same device; bad credentials park
the link in a state the health check can show instead of hammering the homeserver.

Around it: logging in (adapters.matrix_login), joining rooms (adapters.matrix_rooms),
sending (adapters.matrix_send), end-to-end encryption (adapters.matrix_crypto) and
messages that cannot be decrypted yet (adapters.matrix_undecryptable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import ClientError
from nio import (
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    RoomGetStateResponse,
    RoomMessagesError,
    SyncError,
    SyncResponse,
)

from adapters.matrix_crypto import with_sender_device
from adapters.matrix_events import chat_message, sync_filter
from adapters.matrix_login import BadCredentials, MatrixLogin
from adapters.matrix_rooms import RoomJoiner
from adapters.matrix_send import classify, notice_content, send_content
from adapters.matrix_undecryptable import Pending, Undecryptable, notice_for, room_is_encrypted
from gateway.domain import ChatMessage, ChatPost
from gateway.ports import KeyValue, PermanentError, TransientError
from gateway.run import metrics
from gateway.run.supervise import backoff_s

if TYPE_CHECKING:
    from adapters.matrix_crypto import MatrixCrypto

log = structlog.get_logger("adapters.matrix")

# Where each batch's messages go (the core's chat intake): it commits them before returning.
Deliver = Callable[[list[ChatMessage]], Awaitable[None]]


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
        self._sync_timeout_s = sync_timeout_s
        self._backoff_max_s = backoff_max_s
        self._client: AsyncClient | None = None
        self._crypto = crypto
        self._login = MatrixLogin(
            user_id=user_id,
            store=store,
            access_token=access_token,
            password=password,
            device_id=device_id,
            device_name=device_name,
            crypto=crypto,
        )
        self._joiner = RoomJoiner(rooms)
        self._undecryptable = Undecryptable(store, undecryptable_wait_s)
        self.encrypted_rooms: list[str] = []
        self._blind_rooms: list[str] = []
        self.connected = asyncio.Event()
        self._restored = False

    def __repr__(self) -> str:
        return f"MatrixLink({self._user_id!r} on {self._homeserver!r}, state={self.state!r})"

    def deliver_to(self, deliver: Deliver) -> None:
        """Where each batch's messages go, translated into the core's neutral ChatMessage
        (adapters.matrix_events); it must commit them before returning."""
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

    @property
    def unjoined(self) -> dict[str, str]:
        """Configured rooms the bot is not in, and why (gateway health shows "degraded")."""
        return self._joiner.unjoined

    def problem(self) -> str:
        """What is wrong while degraded: the configured rooms the bot is not in."""
        return self._joiner.problem()

    # -- the sync loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Log in, join our rooms, and sync until cancelled."""
        failures = 0
        fresh_login = False
        self._restored = False  # several nodes: this run begins with the shared crypto store
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
        if self._crypto is not None and not self._restored:
            await self.close()  # nio reads its store when it logs in: reopen it restored
            await self._crypto.restore_shared()
            self._restored = True
        if self._client is None:
            self._client = self._new_client()
        client = self._client
        await self._login.login(client, fresh=fresh_login)
        await self._joiner.join(client)
        await self._check_encryption(client)
        since = await self._kv.kv_get("matrix.next_batch")
        if since is None:
            # First start: skip history, begin from now.
            first = await client.sync(timeout=0, sync_filter=sync_filter(self._rooms, 0))
            since = self._checked(first).next_batch
            if self._crypto is not None:  # keys this first sync brought, before its cursor
                await self._crypto.save_shared()
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
                    sync_filter=sync_filter(self._rooms, 500),
                )
            )
            await self._joiner.join_missing(client, resp)
            self.state = self._up_state()
            self.connected.set()
            if self._crypto is not None:
                await self._crypto.key_traffic(client)
            events = await self._events(client, resp)
            if events and self._deliver is not None:
                await self._deliver(events)
            if self._crypto is not None:  # the keys this batch brought, before its cursor
                await self._crypto.save_shared()
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
            await self._crypto.save_shared()
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
            await self._deliver([chat_message(item.room_id, plain, int(power))])
        await self._undecryptable.settle(item, "decrypted")

    def _checked(self, resp: object) -> SyncResponse:
        if isinstance(resp, SyncResponse):
            return resp
        if not isinstance(resp, SyncError):
            raise TypeError(f"expected SyncError, got {type(resp).__name__}")
        raise classify(resp)

    async def _events(self, client: AsyncClient, resp: SyncResponse) -> list[ChatMessage]:
        out: list[ChatMessage] = []
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
                out.append(chat_message(room_id, source, int(power)))
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
        connected = self.connected.is_set()
        sent = await send_content(self._client, connected, self._crypto, room_id, content, txn_id)
        if self._crypto is not None:
            await _shared_after_send(self._crypto)
        return sent


async def _shared_after_send(crypto: MatrixCrypto) -> None:
    # The post is out (its outcome must be recorded, not retried): a store that cannot be
    # shared now is shared by the next sync round, or, if the lease is gone, the node taking
    # over re-establishes what it lacks (a new room key; Olm sessions re-created).
    try:
        await crypto.save_shared()
    except TransientError as exc:
        log.warning("matrix.e2ee.store_not_shared", error=type(exc).__name__)
