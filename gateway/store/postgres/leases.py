"""Leases on PostgreSQL: the work that must run on one node at a time (the IMAP watcher of
a mailbox, the Matrix sync loop, the SLA scheduler, the inbox worker).

A lease is a row (name, holder, token, expiry). Taking it succeeds when it is free,
expired, or already ours; every change of holder draws a new token from the
`fencing_tokens` sequence, so tokens only grow. Expiry is judged by the database's clock,
never a node's. `holds` checks, inside the caller's transaction, that a lease is still ours
with this token and locks the row (FOR SHARE) until that transaction ends: a takeover
waits for the effect being recorded, and an effect recorded after a takeover is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.postgres.schema import Conn


@dataclass(frozen=True)
class Grant:
    """A lease held: its fencing token and the seconds left, by the database's clock."""

    token: int
    remaining_s: float


def acquire(conn: Conn, name: str, holder: str, ttl_s: float) -> Grant | None:
    """Take or renew the lease for `ttl_s` seconds; None while another node holds it."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO leases AS l (name, holder, token, acquired_at, expires_at)"
            " VALUES (%s, %s, nextval('fencing_tokens'), clock_timestamp(),"
            " clock_timestamp() + make_interval(secs => %s))"
            " ON CONFLICT (name) DO UPDATE SET"
            " token = CASE WHEN l.holder = excluded.holder AND l.expires_at > clock_timestamp()"
            " THEN l.token ELSE excluded.token END,"
            " acquired_at = CASE WHEN l.holder = excluded.holder"
            " AND l.expires_at > clock_timestamp() THEN l.acquired_at ELSE clock_timestamp() END,"
            " holder = excluded.holder, expires_at = excluded.expires_at"
            " WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()"
            " RETURNING token, EXTRACT(EPOCH FROM expires_at - clock_timestamp())",
            (name, holder, ttl_s),
        ).fetchone()
    return None if row is None else Grant(int(row[0]), float(row[1]))


def release(conn: Conn, name: str, holder: str, token: int) -> None:
    """Give the lease up (on a clean stop), so another node need not wait for its expiry."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM leases WHERE name = %s AND holder = %s AND token = %s",
            (name, holder, token),
        )


def holds(conn: Conn, name: str, holder: str, token: int) -> bool:
    """Inside the caller's transaction: whether the lease is still ours with `token` and
    unexpired; the row stays share-locked until the transaction ends."""
    row = conn.execute(
        "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND token = %s"
        " AND expires_at > clock_timestamp() FOR SHARE",
        (name, holder, token),
    ).fetchone()
    return row is not None


def holders(conn: Conn) -> list[tuple[str, str, int, float]]:
    """Every lease: (name, holder, token, seconds left; negative once expired)."""
    return [
        (str(n), str(h), int(t), float(s))
        for n, h, t, s in conn.execute(
            "SELECT name, holder, token, EXTRACT(EPOCH FROM expires_at - clock_timestamp())"
            " FROM leases ORDER BY name"
        ).fetchall()
    ]
