"""The bot device's crypto store shared by several nodes (state on PostgreSQL): it moves
with the `matrix` lease.

nio keeps the store as a local folder (one SQLite database of pickles encrypted with
`pickle_key`, and the device-trust files). When a node gains the lease, `restore` puts the
folder back as the last holder saved it, before nio opens it; while it holds the lease,
`save` copies the files that changed into the shared store, fenced by the lease's token
(a node past its lease is refused). The Matrix link saves after the key traffic and the
messages of each sync, before that sync's `next_batch` is stored: a node that dies between
the two leaves the cursor behind, and the node taking over receives those to-device
messages (room keys, new Olm sessions) again with the store they belong to. It saves after
each send in an encrypted room too (sharing a room key advances Olm sessions). nio never
stores its outbound Megolm sessions: a node that takes over starts a new one and shares it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import structlog

from gateway.ports import TransientError
from gateway.store.folder import FolderStamp, digest, read_folder, write_folder

log = structlog.get_logger("adapters.matrix_crypto_share")


class SharedFiles(Protocol):
    """Where the files are shared, under the `matrix` lease (gateway.app.leases)."""

    async def load(self) -> dict[str, bytes]:
        """The files as last saved (empty when never saved)."""
        ...

    async def save(self, files: Mapping[str, bytes]) -> bool:
        """Save the changed files; False when this node no longer holds the lease."""
        ...


class LeaseLost(TransientError):
    """The crypto store was not saved: another node holds the `matrix` lease now."""


class CryptoShare:
    """One node's view of the shared crypto store (see the module docstring)."""

    def __init__(self, shared: SharedFiles, folder: Path) -> None:
        self._shared = shared
        self._folder = folder
        self._saved: dict[str, str] = {}  # name -> digest, as the shared store has it
        self._stamp = FolderStamp(folder)
        self._saved_stamp: object = None  # the folder as it was at the last save
        self._lock = asyncio.Lock()

    async def restore(self) -> None:
        """Make the local folder the shared store's copy. When nothing was ever shared, the
        local folder is kept (and shared by the first save): a node that starts encryption
        on a new deployment, or the store copied in by `migrate-state`."""
        async with self._lock:
            files = await self._shared.load()
            if not files:
                self._saved = {}
                log.info("matrix.e2ee.store_not_shared_yet")
                return
            await asyncio.to_thread(write_folder, self._folder, files)
            self._saved = {name: digest(data) for name, data in files.items()}
            self._saved_stamp = None
            log.info(
                "matrix.e2ee.store_restored",
                files=len(files),
                bytes=sum(len(d) for d in files.values()),
            )

    async def save(self) -> None:
        """Share the files that changed since the last save. Raises LeaseLost when the
        lease is no longer this node's (nothing is written then)."""
        async with self._lock:
            # In the event loop, as nio writes its store: no write of nio's is half done.
            # Most posts change nothing in the store: then the stamp is all it costs.
            stamp = self._stamp.now()
            if stamp == self._saved_stamp:
                return
            files = read_folder(self._folder)
            digests = {name: digest(data) for name, data in files.items()}
            changed = {n: files[n] for n, d in digests.items() if self._saved.get(n) != d}
            if changed and not await self._shared.save(changed):
                log.warning("matrix.e2ee.store_save_refused", files=sorted(changed))
                raise LeaseLost("matrix lease lost: crypto store not saved")
            self._saved.update({name: digests[name] for name in changed})
            self._saved_stamp = stamp
            log.debug("matrix.e2ee.store_saved", files=sorted(changed))
