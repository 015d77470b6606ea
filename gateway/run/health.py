"""Health as values: the components' states and the queues in, a verdict and its views out.

The same report feeds `/healthz` (JSON), the gauges of `/metrics`, the one-line STATUS the
service manager shows, and `chatops-gateway status`. Pure: the caller reads the states and
the store and passes `now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.domain import QueueStats
from gateway.ports import LinkState

# "starting" holds READY back, "bad_credentials" is unhealthy, and so is "needs_e2ee" (the
# bot is in an encrypted room it cannot read).
STARTING = LinkState.STARTING
BAD_STATES = frozenset({LinkState.BAD_CREDENTIALS, LinkState.FAILED, LinkState.NEEDS_E2EE})
_EGRESS_KINDS = {"pager": ("page.trigger", "page.acknowledge", "page.resolve"),
                 "mail": ("mail.send",), "chat": ("chat.announce", "chat.send")}


def egress_states(stats: QueueStats, configured: Mapping[str, str]) -> dict[str, str]:
    """Each configured egress (name -> provider): "ok", or "backing_off" while any of its
    entries waits for a retry after a failure."""
    out = {}
    for name, provider in configured.items():
        kinds = _EGRESS_KINDS.get(name, ())
        retrying = any(stats.outbox_retrying.get(k, 0) for k in kinds)
        out[name] = f"{provider}: backing_off" if retrying else f"{provider}: ok"
    return out


def report(components: Mapping[str, str], egress: Mapping[str, str], stats: QueueStats,
           now: datetime, stuck_after_s: float) -> dict[str, Any]:
    """The health report; `healthy` is False when a component has bad credentials (or
    failed) or the oldest outbox entry has waited longer than `stuck_after_s`."""
    age = 0.0 if stats.outbox_oldest is None else max(
        0.0, (now - stats.outbox_oldest).total_seconds())
    problems = [f"{name}: {state}" for name, state in components.items() if state in BAD_STATES]
    if age > stuck_after_s:
        problems.append(f"outbox: oldest entry waiting {age:.0f}s")
    return {
        "healthy": not problems,
        "problems": problems,
        "components": dict(components),
        "egress": dict(egress),
        "inbox": {"pending": stats.inbox_pending, "held": stats.inbox_held},
        "outbox": {"pending": stats.outbox_pending, "oldest_age_s": round(age, 3),
                   "retrying": sum(stats.outbox_retrying.values()), "dead": stats.outbox_dead},
    }


def gauges(health: Mapping[str, Any]) -> list[tuple[str, str, dict[str, str], float]]:
    """The report's numbers as Prometheus gauges (for gateway.run.metrics.render)."""
    out = health["outbox"]
    series: list[tuple[str, str, dict[str, str], float]] = [
        ("chatops_up", "1 when the daemon reports itself healthy.", {},
         1.0 if health["healthy"] else 0.0),
        ("chatops_inbox_pending", "Accepted messages not processed yet.", {},
         health["inbox"]["pending"]),
        ("chatops_inbox_held", "Messages held by the rate limits (see `held list`).", {},
         health["inbox"].get("held", 0)),
        ("chatops_outbox_depth", "Outbox entries waiting for delivery.", {}, out["pending"]),
        ("chatops_outbox_oldest_age_seconds", "Age of the oldest waiting outbox entry.", {},
         out["oldest_age_s"]),
        ("chatops_outbox_dead", "Outbox entries given up on (see `outbox list`).", {},
         out["dead"]),
    ]
    for name, state in health["components"].items():
        series.append(("chatops_component_state",
                       "1 for each component's current state.",
                       {"component": name, "state": state}, 1.0))
    return series


def summary(components: Mapping[str, str], outbox_pending: int | None = None) -> str:
    """One line for the service manager's STATUS=."""
    parts = [f"{name} {state}" for name, state in components.items()]
    if outbox_pending is not None:
        parts.append(f"outbox {outbox_pending}")
    return ", ".join(parts) or "running"


def text(health: Mapping[str, Any], counters: Mapping[str, float]) -> str:
    """A human summary for `chatops-gateway status`."""
    lines = [f"chatops-gateway: {'healthy' if health['healthy'] else 'UNHEALTHY'}"]
    lines += [f"  problem: {p}" for p in health["problems"]]
    for title, key in (("intake and links", "components"), ("egress", "egress")):
        if health.get(key):
            lines.append(f"{title}:")
            lines += [f"  {name:<10} {state}" for name, state in health[key].items()]
    out = health["outbox"]
    held = health["inbox"].get("held", 0)
    lines.append(f"inbox: {health['inbox']['pending']} pending"
                 + (f", {held} held (see `chatops-gateway held list`)" if held else ""))
    lines.append(f"outbox: {out['pending']} pending (oldest {out['oldest_age_s']:.0f}s), "
                 f"{out['retrying']} retrying, {out['dead']} dead")
    if counters:
        lines.append("since start:")
        lines += [f"  {name:<34} {value:g}" for name, value in counters.items()]
    return "\n".join(lines)
