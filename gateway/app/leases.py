"""Several nodes on one PostgreSQL store: which loops run under a lease, and the keepers.

Owns the wiring of gateway.run.cluster into the daemon: whether there is a cluster at all
(`cluster_for`), the lease keepers and the store's watch (`cluster_tasks`), `Once`, which
runs a singleton loop under its lease on several nodes or simply runs it on one, and
`LeasedFiles`, the Matrix crypto store saved under the `matrix` lease's token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.model import Config
from gateway.domain import OutboxKind
from gateway.ports import Store
from gateway.run.cluster import Cluster, singleton


def cluster_for(config: Config, store: Store) -> Cluster | None:
    """Leases and claims when the store is shared by several nodes (PostgreSQL)."""
    pg = config.state.postgresql
    if config.state.backend != "postgresql" or pg is None or not hasattr(store, "acquire_lease"):
        return None
    return Cluster(store, pg.lease_s)  # type: ignore[arg-type]  # checked just above


def cluster_tasks(
    group: asyncio.TaskGroup,
    cluster: Cluster,
    store: Store,
    chat: bool,
    wake_inbox: Callable[[], None],
) -> list[asyncio.Task[None]]:
    """The lease keepers, the store's watch and its listener (mail accepted by another
    node wakes this node's inbox worker); chat is claimed only by the Matrix node."""
    if chat and hasattr(store, "skip_kinds"):
        kinds = frozenset({OutboxKind.CHAT_ANNOUNCE, OutboxKind.CHAT_SEND, OutboxKind.CHAT_ALARM})
        matrix = cluster.lease("matrix")
        store.skip_kinds = lambda: frozenset() if matrix.held() else kinds
    tasks = [
        group.create_task(lease.run(), name=f"lease-{name}")
        for name, lease in cluster.leases.items()
    ]
    watch = getattr(store, "watch", None)
    if watch is not None:
        tasks.append(group.create_task(watch(), name="store-watch"))
    listen = getattr(store, "listen", None)
    if listen is not None:
        inbox = cluster.lease("inbox")
        store.notify_accepts = lambda: not inbox.held()  # type: ignore[attr-defined]
        tasks.append(group.create_task(listen(wake_inbox), name="store-listen"))
    return tasks


class Part(Protocol):
    """A supervised link (gateway.run.supervisor): a run loop and a state."""

    state: str

    def run(self) -> Coroutine[Any, Any, None]: ...


@dataclass(frozen=True)
class Once:
    """Runs a loop under its lease on several nodes, or simply runs it on one."""

    cluster: Cluster | None
    stop: asyncio.Event

    def __call__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        on_lost: Callable[[], None] | None = None,
    ) -> Coroutine[Any, Any, None]:
        if self.cluster is None:
            return run()
        return singleton(self.cluster.lease(name), run, self.stop.is_set, on_lost)

    def bound(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """`run` under its lease, for the supervisor to start (and restart). The lease is
        made now, before the keepers are started (cluster_tasks)."""
        if self.cluster is None:
            return run
        self.cluster.lease(name)
        return lambda: self(name, run, on_lost)

    def part(self, name: str, part: Part, on_lost: Callable[[], None] | None = None) -> Part:
        """A supervised link that runs under its lease."""
        if self.cluster is None:
            return part
        return _Leased(part, self.bound(name, part.run, on_lost))


class _Leased:
    """A link whose run loop runs under its lease; its state is the link's own."""

    def __init__(self, part: Part, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._part, self._run = part, run

    @property
    def state(self) -> str:
        return self._part.state

    @state.setter
    def state(self, value: str) -> None:
        self._part.state = value

    def run(self) -> Coroutine[Any, Any, None]:
        return self._run()


class CryptoFilesStore(Protocol):
    """The store's side of the shared crypto store (PostgresStore)."""

    async def load_crypto_files(self) -> dict[str, bytes]: ...

    async def save_crypto_files(self, token: int, files: dict[str, bytes]) -> bool: ...


class LeasedFiles:
    """The Matrix crypto store's files in the shared store, saved only while this node holds
    the `matrix` lease, under its token (adapters.matrix_crypto_share.SharedFiles)."""

    def __init__(self, store: CryptoFilesStore, cluster: Cluster) -> None:
        self._store = store
        self._lease = cluster.lease("matrix")

    async def load(self) -> dict[str, bytes]:
        """The files as last saved."""
        return await self._store.load_crypto_files()

    async def save(self, files: Mapping[str, bytes]) -> bool:
        """Save them under the lease's token; False when the lease is not held here."""
        token = self._lease.token
        if token is None or not self._lease.held():
            return False
        return await self._store.save_crypto_files(token, dict(files))


def leased_files(cluster: Cluster | None, store: Store) -> LeasedFiles | None:
    """The shared crypto store on several nodes; None on one host (a local folder)."""
    if cluster is None or not hasattr(store, "save_crypto_files"):
        return None
    return LeasedFiles(store, cluster)  # type: ignore[arg-type]  # checked just above
