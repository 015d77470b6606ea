"""A standby node is healthy: its singleton links (IMAP watchers, the Matrix sync) show
"standby" while another node holds their leases, which is not "down", and the chat egress
is not "disconnected" on the node that leaves chat to the Matrix node."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from gateway.domain import QueueStats
from gateway.run import health
from gateway.run.cluster import STANDBY, Cluster


class _NoStore:
    """Leases are never asked for here (no keeper runs)."""


def test_standby_links_are_not_down_after_the_grace() -> None:
    """Standby components never count as down, so the node stays healthy."""
    seen = health.Downtime()
    states = {"imap:support": STANDBY, "matrix": STANDBY, "store": "connected"}
    seen.observe(states, 0.0)
    down = seen.observe(states, 3600.0)
    assert down == {}
    report = health.report(
        states,
        {},
        QueueStats(0, 0, None, {}, 0),
        datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        600.0,
        down_for=down,
        grace_s=30.0,
    )
    assert report["healthy"] is True and report["problems"] == []
    assert seen.observe({"imap:support": "backing_off"}, 3601.0) == {"imap:support": 0.0}


def test_a_link_left_to_another_node_is_up_for_the_outbox_gate() -> None:
    """The chat gate follows the Matrix connection only while this node holds the lease."""
    cluster = Cluster(_NoStore(), 3.0)  # type: ignore[arg-type]
    up = cluster.connected("matrix", lambda: False)
    assert up() is True  # standby: chat is never claimed here, so not "disconnected"
    lease = cluster.lease("matrix")
    lease.token, lease._deadline = 7, math.inf  # as the keeper leaves a held lease
    assert up() is False  # held here: the real connection, which is down
