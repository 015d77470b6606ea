"""Logging in to Matrix as one device, kept across restarts: the stored (or configured)
access token first, else the password on the same device; the device id and token are
persisted so a retried send with the same transaction id stays de-duplicated, and the
end-to-end crypto store is prepared for the device before nio opens it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from nio import AsyncClient, LoginResponse, WhoamiResponse

from adapters.matrix_send import classify
from gateway.ports import KeyValue

if TYPE_CHECKING:
    from adapters.matrix_crypto import MatrixCrypto

log = structlog.get_logger("adapters.matrix")


class BadCredentials(Exception):
    """The homeserver refused our token or password."""


class MatrixLogin:
    """The bot account's credentials and how to log in with them."""

    def __init__(
        self,
        *,
        user_id: str,
        store: KeyValue,
        access_token: str | None,
        password: str | None,
        device_id: str | None,
        device_name: str,
        crypto: MatrixCrypto | None,
    ) -> None:
        self._user_id, self._kv = user_id, store
        self._token, self._password = access_token, password
        self._device_id, self._device_name = device_id, device_name
        self._crypto = crypto

    # C901: every way a homeserver answers a login (token, password, errors), side by side.
    async def login(self, client: AsyncClient, *, fresh: bool = False) -> None:  # noqa: C901
        """Log `client` in (`fresh`: the stored token was refused, do not try it again)."""
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
                raise classify(who)
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
            raise classify(resp)
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
