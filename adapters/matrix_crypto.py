"""End-to-end encryption for the Matrix link, on matrix-nio's vodozemac crypto.

Owns the crypto store (an SQLite file in the state directory, 0700 folder, 0600 file, pickled
with an operator-supplied key, never nio's default; shared through the database by several
nodes: adapters.matrix_crypto_share), the key traffic around each sync (upload,
query, claim, to-device), room state for encrypted rooms after a restart, and the trust policy
applied to every device (`gateway.plan.e2ee.device_verdict`: verify or block, stored by nio).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import structlog
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    KeysQueryError,
    KeysUploadError,
    MatrixRoom,
    MegolmEvent,
    RoomGetStateResponse,
)
from nio.crypto import ENCRYPTION_ENABLED

from adapters.matrix_crypto_share import CryptoShare
from adapters.matrix_events import SENDER_DEVICE
from adapters.matrix_undecryptable import room_is_encrypted
from gateway.plan.e2ee import DeviceFacts, PinnedDevice, TrustMode, device_verdict

log = structlog.get_logger("adapters.matrix_crypto")


class CryptoUnavailable(RuntimeError):
    """matrix-nio was installed without its `e2e` extra (vodozemac)."""


class MatrixCrypto:
    """The bot device's keys and trust decisions, for one account."""

    def __init__(
        self,
        *,
        store_dir: Path,
        pickle_key: str,
        trust: TrustMode,
        engineers: Collection[str],
        pinned: Collection[PinnedDevice] = (),
        share: CryptoShare | None = None,
    ) -> None:
        if not ENCRYPTION_ENABLED:
            raise CryptoUnavailable("matrix-nio has no crypto: install matrix-nio[e2e]")
        self.store_dir = store_dir
        self._pickle_key = pickle_key
        self._trust = trust
        self._engineers = frozenset(engineers)
        self._pinned = tuple(pinned)
        self.share = share  # several nodes: the store moves with the lease

    def __repr__(self) -> str:  # never show the pickle key
        return f"MatrixCrypto(store_dir={str(self.store_dir)!r}, trust={self._trust!r})"

    async def restore_shared(self) -> None:
        """Before nio opens the store on a node that just gained the lease: the store as the
        last holder left it (nothing to do on one host)."""
        if self.share is not None:
            await self.share.restore()

    async def save_shared(self) -> None:
        """Share what changed in the store (nothing to do on one host); raises LeaseLost
        when another node holds the lease now."""
        if self.share is not None:
            await self.share.save()

    def client_config(self, **kwargs: Any) -> AsyncClientConfig:
        """nio's config with encryption on and our pickle key; the caller's other settings."""
        return AsyncClientConfig(encryption_enabled=True, pickle_key=self._pickle_key, **kwargs)

    def store_file(self, user_id: str, device_id: str) -> Path:
        """The file nio's default store uses for this account and device."""
        return self.store_dir / f"{user_id}_{device_id}.db"

    def has_store(self, user_id: str, device_id: str) -> bool:
        """Whether this device's keys are on disk (without them the device cannot be reused)."""
        return self.store_file(user_id, device_id).exists()

    def prepare(self, user_id: str, device_id: str) -> None:
        """Create the store folder (0700) and file (0600) before nio opens it, so the keys are
        never readable by others, not even for a moment. SQLite gives its journal the same
        mode as the database file."""
        self.prepare_dir()
        path = self.store_file(user_id, device_id)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)

    def prepare_dir(self) -> None:
        """The store folder, 0700: a new device's file (created by nio at login, before its
        name is known) is out of others' reach until `prepare` narrows it to 0600."""
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.store_dir, 0o700)

    async def load_rooms(self, client: AsyncClient, rooms: list[str]) -> list[str]:
        """Fetch our rooms' state so nio knows which are encrypted and who may speak, also
        after a restart (an incremental sync does not repeat room state); returns the
        encrypted ones."""
        if client.olm is not None:  # what an engineer compares when verifying us in Element
            log.info(
                "matrix.e2ee.device",
                device_id=client.device_id,
                ed25519=client.olm.account.identity_keys["ed25519"],
            )
        encrypted = []
        for room_id in rooms:
            resp = await client.room_get_state(room_id)
            if not isinstance(resp, RoomGetStateResponse):
                log.warning("matrix.e2ee.room_state_failed", room_id=room_id)
                continue
            room = client.rooms.get(room_id)
            if room is None:
                room = client.rooms[room_id] = MatrixRoom(room_id, client.user_id)
            for source in resp.events:
                event = Event.parse_event(source)
                if isinstance(event, Event):
                    room.handle_event(event)
            if room_is_encrypted(resp.events):
                room.encrypted = True
                if room_id not in client.encrypted_rooms:
                    client.encrypted_rooms.add(room_id)
                    if client.store is not None:
                        client.store.save_encrypted_rooms([room_id])
                encrypted.append(room_id)
        return encrypted

    async def key_traffic(self, client: AsyncClient) -> None:
        """What nio's own sync_forever does between syncs: our one-time keys, other devices'
        keys, Olm sessions to them, and queued to-device messages; then decide on new devices."""
        if client.should_upload_keys:
            resp = await client.keys_upload()
            if isinstance(resp, KeysUploadError):
                log.warning("matrix.e2ee.keys_upload_failed", error=resp.status_code)
        if client.should_query_keys:
            query = await client.keys_query()
            if isinstance(query, KeysQueryError):
                log.warning("matrix.e2ee.keys_query_failed", error=query.status_code)
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        await client.send_to_device_messages()
        self.apply_trust(client)

    def apply_trust(self, client: AsyncClient) -> None:
        """Verify or block every device not yet decided on (nio stores the decision)."""
        for device in client.device_store:
            if device.deleted or device.trust_state.name != "unset":
                continue
            if device.user_id == client.user_id and device.device_id == client.device_id:
                continue
            facts = DeviceFacts(device.user_id, device.device_id, device.ed25519)
            verdict, why = device_verdict(self._trust, self._engineers, self._pinned, facts)
            if verdict == "trust":
                client.verify_device(device)
                log.info(
                    "matrix.e2ee.device_trusted",
                    user_id=device.user_id,
                    device_id=device.device_id,
                    ed25519=device.ed25519,
                    reason=why,
                )
            else:
                client.blacklist_device(device)
                log.info(
                    "matrix.e2ee.device_blocked",
                    user_id=device.user_id,
                    device_id=device.device_id,
                    reason=why,
                )

    async def request_key(self, client: AsyncClient, event: MegolmEvent) -> None:
        """Ask the sender's devices (and ours) for the missing room key, once per session."""
        if event.session_id in client.outgoing_key_requests:
            return
        resp = await client.request_room_key(event)
        log.info(
            "matrix.e2ee.key_requested",
            room_id=event.room_id,
            event_id=event.event_id,
            ok=not hasattr(resp, "status_code") or resp.status_code is None,
        )

    def try_decrypt(
        self, client: AsyncClient, source: dict[str, Any], room_id: str
    ) -> dict[str, Any] | None:
        """The decrypted event's source, or None while the key (or the sending device's
        keys) are still missing. The source carries `SENDER_DEVICE`: the device that sent it
        and whether it is trusted (nio's verdict: a device our policy verified, whose own
        keys, not forwarded ones, encrypted the event)."""
        if client.olm is None:
            return None
        event = Event.parse_event(source)
        if not isinstance(event, MegolmEvent):
            return None
        event.room_id = room_id
        if not self._device_known(client, event):
            # Without the device's keys nio cannot tell a trusted device from another: it
            # queues a key query; the event is tried again after the next sync.
            client.olm.users_for_key_query.add(event.sender)
            return None
        try:
            plain = client.decrypt_event(event)
        except Exception:  # nio raises EncryptionError and others for a missing/bad session
            return None
        if not isinstance(plain, Event):
            return None
        return with_sender_device(client, room_id, plain)

    @staticmethod
    def _device_known(client: AsyncClient, event: MegolmEvent) -> bool:
        if event.sender == client.user_id and event.device_id == client.device_id:
            return True
        try:
            return event.device_id in client.device_store[event.sender]
        except KeyError:
            return False


def with_sender_device(client: AsyncClient, room_id: str, event: Event) -> dict[str, Any]:
    """An event's source for the core. A decrypted one carries `SENDER_DEVICE`: the device
    whose keys encrypted it and whether the trust policy verified that device; any such key
    already in the source (a sender can put anything in what it encrypts, a server anything
    in a plaintext event) is replaced or removed.

    Judged now, after this sync's key query, rather than when nio decrypted the event during
    the sync (a device that had just appeared was then still unknown): trusted means the
    device is verified, and the Megolm session is that device's own (its signing key, not
    forwarded by another device)."""
    source: dict[str, Any] = dict(event.source)
    source.pop(SENDER_DEVICE, None)
    if not getattr(event, "decrypted", False) or client.olm is None:
        return source
    sender_key, session_id = getattr(event, "sender_key", None), getattr(event, "session_id", None)
    device = (
        client.device_store.device_from_sender_key(event.sender, sender_key) if sender_key else None
    )
    trusted = False
    if device is not None and device.verified and session_id:
        session = client.olm.inbound_group_store.get(room_id, sender_key, session_id)
        trusted = (
            session is not None
            and not session.forwarding_chain
            and session.ed25519 == device.ed25519
        )
    device_id = device.device_id if device is not None else "(unknown)"
    source[SENDER_DEVICE] = {"device_id": device_id, "trusted": trusted}
    if not trusted:
        log.info(
            "matrix.e2ee.untrusted_sender_device",
            room_id=room_id,
            event_id=source.get("event_id"),
            user_id=event.sender,
            device_id=device_id,
        )
    return source
