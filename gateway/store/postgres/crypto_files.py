"""The Matrix bot device's crypto store in the shared database, so that whichever node holds
the `matrix` lease continues with the same Olm account, Olm sessions and room keys.

One row per file of the store (adapters.matrix_crypto_share decides what the files are and
takes a consistent copy of each). A save is fenced: it happens only while the `matrix` lease
is still this node's with the given token, checked and locked in the same transaction
(gateway.store.postgres.leases.holds), so a node that was paused or cut off past its lease
can never put an older store over the newer one of the node that took over.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.store.postgres.leases import holds
from gateway.store.postgres.schema import Conn

LEASE = "matrix"


def load(conn: Conn) -> dict[str, bytes]:
    """Every saved file of the store, by name (empty when none was ever saved)."""
    return {
        str(name): bytes(data)
        for name, data in conn.execute("SELECT name, data FROM matrix_crypto ORDER BY name")
    }


def save(conn: Conn, holder: str, token: int, files: Mapping[str, bytes]) -> bool:
    """Store `files` (the changed ones; others are kept) if the `matrix` lease is still
    `holder`'s with `token`; False, and nothing written, when it is not."""
    with conn.transaction():
        if not holds(conn, LEASE, holder, token):
            return False
        _upsert(conn, token, files)
    return True


def copy_in(conn: Conn, files: Mapping[str, bytes]) -> None:
    """Inside the caller's transaction: the files of a single host's store, when moving up
    (gateway.store.postgres.migrate; no node runs yet, so no lease)."""
    _upsert(conn, 0, files)


def _upsert(conn: Conn, token: int, files: Mapping[str, bytes]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO matrix_crypto (name, data, token, saved_at)"
            " VALUES (%s, %s, %s, clock_timestamp())"
            " ON CONFLICT (name) DO UPDATE SET data = excluded.data, token = excluded.token,"
            " saved_at = excluded.saved_at",
            [(name, data, token) for name, data in files.items()],
        )
