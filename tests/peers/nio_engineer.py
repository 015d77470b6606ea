"""An engineer's Matrix client with end-to-end encryption (matrix-nio on vodozemac), for the
tests of encrypted rooms: it keeps its own crypto store, reads what the bot posts (decrypted),
and sends encrypted messages, in a thread when asked."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import vodozemac
from nio import AsyncClient, AsyncClientConfig, RoomMessageNotice, RoomSendResponse, SyncResponse
from nio.api import Api


class Engineer:
    """One logged-in device with its keys uploaded; `pull()` syncs and collects notices."""

    def __init__(self, homeserver: str, user_id: str, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=True, store_sync_tokens=False, pickle_key="engineer-test-pickle-key"
        )
        self.client = AsyncClient(homeserver, user_id, store_path=str(store), config=config)
        self.notices: list[RoomMessageNotice] = []
        self._since: str | None = None

    async def login(self, password: str) -> None:
        """Log in, upload the device keys, and catch up once."""
        await self.client.login(password, device_name="engineer-laptop")
        await self.pull(0)

    async def pull(self, timeout_ms: int = 500) -> None:
        """One sync: keys in and out, the bot's notices (decrypted) collected."""
        resp = await self.client.sync(timeout=timeout_ms, since=self._since, full_state=False)
        assert isinstance(resp, SyncResponse), resp
        self._since = resp.next_batch
        for room in resp.rooms.join.values():
            self.notices += [e for e in room.timeline.events if isinstance(e, RoomMessageNotice)]
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())
        await self.client.send_to_device_messages()

    async def notices_with(self, text: str) -> list[RoomMessageNotice]:
        """Sync once, then the bot's notices that contain `text`."""
        await self.pull()
        return [n for n in self.notices if text in n.body]

    async def say(self, room_id: str, body: str, thread_root: str | None = None) -> str:
        """Send an encrypted `m.text` (to every device, trusting them blindly: a test client)."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if thread_root:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": thread_root},
            }
        resp = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        event_id: str = resp.event_id
        return event_id

    async def say_with_unshared_session(self, room_id: str, body: str) -> str:
        """Send a message encrypted with a fresh Megolm session whose key no one receives:
        what the bot sees when a sender's client never shared the room key with it."""
        session = vodozemac.GroupSession()
        payload = json.dumps(
            {
                "type": "m.room.message",
                "room_id": room_id,
                "content": {"msgtype": "m.text", "body": body},
            }
        )
        olm = self.client.olm
        assert olm is not None
        content = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": olm.account.identity_keys["curve25519"],
            "device_id": self.client.device_id,
            "session_id": session.session_id,
            "ciphertext": session.encrypt(payload.encode()).to_base64(),
        }
        # Straight to the API: room_send would encrypt the already encrypted content again.
        method, path, data = Api.room_send(
            self.client.access_token, room_id, "m.room.encrypted", content, uuid.uuid4().hex
        )
        resp = await self.client._send(RoomSendResponse, method, path, data, (room_id,))
        event_id: str = resp.event_id
        return event_id

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()
