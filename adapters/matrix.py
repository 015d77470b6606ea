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
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import ClientError
from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinError,
    LoginResponse,
    RoomMessagesError,
    RoomSendResponse,
    SyncError,
    SyncResponse,
    WhoamiResponse,
)

from gateway import metrics
from gateway.ports import PermanentError, TransientError

log = structlog.get_logger("adapters.matrix")


class KeyValue(Protocol):
    """Where the link keeps its sync token, device and access token."""

    async def kv_get(self, key: str) -> str | None: ...
    async def kv_set(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class RoomEvent:
    """A message event from a watched room, with what the core needs to authorise it."""

    room_id: str
    event: Mapping[str, Any]
    sender_power: int


Deliver = Callable[[list[RoomEvent]], Awaitable[None]]


class BadCredentials(Exception):
    """The homeserver refused our token or password."""


def _filter(rooms: list[str], limit: int) -> dict[str, Any]:
    return {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "rooms": rooms,
            # A large limit so a busy room is not cut short ("limited"); backfill covers the rest.
            "timeline": {"limit": limit, "types": ["m.room.message"]},
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
        self.connected = asyncio.Event()

    def __repr__(self) -> str:
        return f"MatrixLink({self._user_id!r} on {self._homeserver!r}, state={self.state!r})"

    def deliver_to(self, deliver: Deliver) -> None:
        """Where each batch's events go; it must commit them before returning."""
        self._deliver = deliver

    def _new_client(self) -> AsyncClient:
        # nio must not retry on its own: 429s and timeouts come back to our loop, which backs
        # off with a cap and keeps the state visible.
        config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0,
                                   request_timeout=self._sync_timeout_s + 30,
                                   store_sync_tokens=False, encryption_enabled=False)
        return AsyncClient(self._homeserver, self._user_id, config=config)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- login --------------------------------------------------------------------------------
    async def _login(self, client: AsyncClient, *, fresh: bool = False) -> None:
        token = self._token or (None if fresh else await self._kv.kv_get("matrix.access_token"))
        device = self._device_id or await self._kv.kv_get("matrix.device_id")
        if token:
            client.restore_login(self._user_id, device or "", token)
            who = await client.whoami()
            if isinstance(who, WhoamiResponse):
                if who.device_id and not device:
                    client.device_id = who.device_id
                    await self._kv.kv_set("matrix.device_id", who.device_id)
                return
            if who.status_code not in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise _classify(who)
            if self._password is None:
                raise BadCredentials("the access token was refused")
        if self._password is None:
            raise BadCredentials("no usable access token and no password")
        if device:
            client.device_id = device  # nio logs in as this device when set
        resp = await client.login(self._password, device_name=self._device_name)
        if not isinstance(resp, LoginResponse):
            if resp.status_code in ("M_FORBIDDEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"):
                raise BadCredentials("the homeserver refused the password")
            raise _classify(resp)
        # Keep the device and token: a retried send with the same transaction id is only
        # de-duplicated by the homeserver for the same access token.
        await self._kv.kv_set("matrix.device_id", resp.device_id)
        await self._kv.kv_set("matrix.access_token", resp.access_token)

    async def _join(self, client: AsyncClient) -> None:
        for room in self._rooms:
            resp = await client.join(room)
            if isinstance(resp, JoinError):
                log.error("matrix.join_failed", room_id=room, error=resp.status_code)

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
                delay = min(self._backoff_max_s, 0.5 * 2 ** min(failures, 10))
                delay *= random.uniform(0.8, 1.2)
                if isinstance(exc, TransientError) and exc.retry_after_s:
                    delay = max(delay, exc.retry_after_s)  # M_LIMIT_EXCEEDED: as told
                log.warning("matrix.backing_off", error=getattr(exc, "reason", type(exc).__name__),
                            delay_s=round(delay, 2))
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
        since = await self._kv.kv_get("matrix.next_batch")
        if since is None:
            # First start: skip history, begin from now.
            first = await client.sync(timeout=0, sync_filter=_filter(self._rooms, 0))
            since = self._checked(first).next_batch
            await self._kv.kv_set("matrix.next_batch", since)
        # Logged in, joined, and reading from `since` on: whatever is said in the rooms from
        # now is seen, and sends may go without waiting for a long-poll to return.
        self.state = "connected"
        self.connected.set()
        while True:
            resp = self._checked(await client.sync(
                timeout=int(self._sync_timeout_s * 1000), since=since,
                sync_filter=_filter(self._rooms, 500)))
            self.state = "connected"
            self.connected.set()
            events = await self._events(client, resp)
            if events and self._deliver is not None:
                await self._deliver(events)
            since = resp.next_batch
            await self._kv.kv_set("matrix.next_batch", since)

    def _checked(self, resp: object) -> SyncResponse:
        if isinstance(resp, SyncResponse):
            return resp
        assert isinstance(resp, SyncError)
        raise _classify(resp)

    async def _events(self, client: AsyncClient, resp: SyncResponse) -> list[RoomEvent]:
        out: list[RoomEvent] = []
        for room_id, info in resp.rooms.join.items():
            if room_id not in self._rooms:
                continue
            sources = [e.source for e in info.timeline.events]
            if info.timeline.limited and info.timeline.prev_batch:
                sources = await self._backfill(client, room_id, info.timeline.prev_batch) + sources
            room = client.rooms.get(room_id)
            for source in sources:
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
            older = [e.source for e in reversed(page.chunk)] + older
            if not page.end:
                break
            token = page.end
        log.warning("matrix.timeline_backfilled", room_id=room_id, events=len(older))
        return older

    # -- sending ----------------------------------------------------------------------------
    async def send(self, room_id: str, content: Mapping[str, Any], txn_id: str
                   ) -> Mapping[str, Any]:
        """Send one event; the same txn_id (on the same token) is delivered once."""
        client = self._client
        if client is None or not client.access_token or not self.connected.is_set():
            # Not logged in, or our rooms not joined yet: the outbox tries again shortly.
            raise TransientError("not connected to the homeserver yet", 1.0)
        try:
            resp = await asyncio.wait_for(
                client.room_send(room_id, "m.room.message", dict(content), tx_id=txn_id,
                                 ignore_unverified_devices=True),
                self._sync_timeout_s + 30)
        except (ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"homeserver unreachable ({type(exc).__name__})") from None
        if isinstance(resp, RoomSendResponse):
            return {"event_id": resp.event_id}
        assert isinstance(resp, ErrorResponse)
        raise _classify(resp)


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
