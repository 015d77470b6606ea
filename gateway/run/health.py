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
# bot is in an encrypted room it cannot read), "degraded" (up, but part of what is
# configured does not work: a room the bot is not in) and "failed" (the component's task
# ended and is being restarted).
STARTING = LinkState.STARTING
BAD_STATES = frozenset(
    {LinkState.BAD_CREDENTIALS, LinkState.FAILED, LinkState.NEEDS_E2EE, LinkState.DEGRADED}
)
# States in which a link carries traffic; any other state is "down" (see Downtime). The
# canary's "waiting" (none sent yet) and an egress's "ok" count as up.
# A singleton link on a node that does not hold its lease is "standby" (gateway.run.cluster):
# another node runs it, and this one takes over when that lease lapses; it is not down.
UP_STATES = frozenset(
    {
        LinkState.CONNECTED,
        LinkState.LISTENING,
        LinkState.DEGRADED,
        LinkState.NEEDS_E2EE,
        "ok",
        "waiting",
        "standby",
    }
)
_EGRESS_KINDS = {
    "pager": ("page.trigger", "page.acknowledge", "page.resolve"),
    "mail": ("mail.send",),
    "chat": ("chat.announce", "chat.send"),
}


def egress_states(
    stats: QueueStats, configured: Mapping[str, str], links: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each configured egress (name -> provider): "ok", "backing_off" while any of its
    entries waits for a retry after a failure, or its link's state ("unreachable",
    "disconnected") while the link is down (`links`: name -> state)."""
    out = {}
    for name, provider in configured.items():
        kinds = _EGRESS_KINDS.get(name, ())
        link = (links or {}).get(name, "ok")
        retrying = any(stats.outbox_retrying.get(k, 0) for k in kinds)
        state = link if link != "ok" else "backing_off" if retrying else "ok"
        out[name] = f"{provider}: {state}"
    return out


def is_up(state: str) -> bool:
    """Whether a component's (or an egress's "provider: state") state carries traffic."""
    return state.rpartition(": ")[2] in UP_STATES


RECOVERED_AFTER_S = 2.0  # a link counts as back only once it has stayed up this long


class Downtime:
    """Since when each link has been down, from the states observed (monotonic seconds).
    An egress in "backing_off" (its peer answers, with errors) is up; a component in
    "backing_off" (reconnecting) is down. A link seen up again counts as back only after
    staying up RECOVERED_AFTER_S: one that flaps (up for a moment, down again) keeps the
    time it first went down, so it cannot stay "healthy" by reconnecting now and then."""

    def __init__(self, recovered_after_s: float = RECOVERED_AFTER_S) -> None:
        self._since: dict[str, float] = {}
        self._up_at: dict[str, float] = {}
        self._recovered_after_s = recovered_after_s

    def observe(self, states: Mapping[str, str], now: float) -> dict[str, float]:
        """Record the states seen at `now`; returns how long each down link has been down
        (links up again but not yet for RECOVERED_AFTER_S are not listed)."""
        for name, state in states.items():
            up = is_up(state) or (name.startswith("egress:") and state.endswith("backing_off"))
            if not up:
                self._up_at.pop(name, None)
                self._since.setdefault(name, now)
            elif name in self._since:
                back = self._up_at.setdefault(name, now)
                if now - back >= self._recovered_after_s:
                    del self._since[name], self._up_at[name]
        for name in set(self._since) - set(states):
            self._since.pop(name, None)
            self._up_at.pop(name, None)
        return {name: now - since for name, since in self._since.items() if name not in self._up_at}


def report(
    components: Mapping[str, str],
    egress: Mapping[str, str],
    stats: QueueStats,
    now: datetime,
    stuck_after_s: float,
    down_for: Mapping[str, float] | None = None,
    grace_s: float = 30.0,
    details: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The health report; `healthy` is False when a component has bad credentials (or
    failed, or is degraded), when a link has been down (`down_for`, seconds) longer than
    `grace_s`, or when the oldest outbox entry has waited longer than `stuck_after_s`.
    `details` adds a reason to a component's problem line."""
    age = (
        0.0
        if stats.outbox_oldest is None
        else max(0.0, (now - stats.outbox_oldest).total_seconds())
    )
    details = details or {}
    problems = [
        f"{name}: {state}" + (f" ({details[name]})" if details.get(name) else "")
        for name, state in components.items()
        if state in BAD_STATES
    ]
    for name, seconds in sorted((down_for or {}).items()):
        if seconds > grace_s:
            shown = name.removeprefix("egress:")
            state = components.get(name) or egress.get(shown, "down")
            problems.append(f"{shown}: {state} for {seconds:.0f}s")
    if age > stuck_after_s:
        problems.append(f"outbox: oldest entry waiting {age:.0f}s")
    return {
        "healthy": not problems,
        "problems": problems,
        # Links down right now, even within their grace (the heartbeat waits for none).
        "down": {
            name.removeprefix("egress:"): round(seconds, 1)
            for name, seconds in sorted((down_for or {}).items())
        },
        "components": dict(components),
        "egress": dict(egress),
        "inbox": {"pending": stats.inbox_pending, "held": stats.inbox_held},
        "outbox": {
            "pending": stats.outbox_pending,
            "oldest_age_s": round(age, 3),
            "retrying": sum(stats.outbox_retrying.values()),
            "dead": stats.outbox_dead,
        },
    }


def gauges(health: Mapping[str, Any]) -> list[tuple[str, str, dict[str, str], float]]:
    """The report's numbers as Prometheus gauges (for gateway.run.metrics.render)."""
    out = health["outbox"]
    series: list[tuple[str, str, dict[str, str], float]] = [
        (
            "chatops_up",
            "1 when the daemon reports itself healthy.",
            {},
            1.0 if health["healthy"] else 0.0,
        ),
        (
            "chatops_inbox_pending",
            "Accepted messages not processed yet.",
            {},
            health["inbox"]["pending"],
        ),
        (
            "chatops_inbox_held",
            "Messages held by the rate limits (see `held list`).",
            {},
            health["inbox"].get("held", 0),
        ),
        ("chatops_outbox_depth", "Outbox entries waiting for delivery.", {}, out["pending"]),
        (
            "chatops_outbox_oldest_age_seconds",
            "Age of the oldest waiting outbox entry.",
            {},
            out["oldest_age_s"],
        ),
        ("chatops_outbox_dead", "Outbox entries given up on (see `outbox list`).", {}, out["dead"]),
    ]
    for name, state in health["components"].items():
        series.append(
            (
                "chatops_component_state",
                "1 for each component's current state.",
                {"component": name, "state": state},
                1.0,
            )
        )
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
    lines.append(
        f"inbox: {health['inbox']['pending']} pending"
        + (f", {held} held (see `chatops-gateway held list`)" if held else "")
    )
    lines.append(
        f"outbox: {out['pending']} pending (oldest {out['oldest_age_s']:.0f}s), "
        f"{out['retrying']} retrying, {out['dead']} dead"
    )
    if counters:
        lines.append("since start:")
        lines += [f"  {name:<34} {value:g}" for name, value in counters.items()]
    return "\n".join(lines)
