"""Health and links: a link down longer than its grace makes the report unhealthy and names
it; a short reconnect does not; a degraded component is named with its reason."""

from __future__ import annotations

from gateway.domain import QueueStats
from gateway.run import health
from tests.test_store import NOW

EMPTY = QueueStats(0, 0, None, {}, 0)


def test_link_down_past_the_grace_is_a_problem_named_with_its_state() -> None:
    """imap:ops reconnecting for 31 s with a 30 s grace: unhealthy, `imap:ops: backing_off
    for 31s`; at 29 s still healthy (a normal reconnect)."""
    down = health.Downtime()
    states = {"smtp": "listening", "imap:ops": "backing_off"}
    down.observe(states, 100.0)
    short = health.report(states, {}, EMPTY, NOW, 900, down.observe(states, 129.0), 30.0)
    long = health.report(states, {}, EMPTY, NOW, 900, down.observe(states, 131.0), 30.0)
    assert short["healthy"] is True
    assert long["healthy"] is False and long["problems"] == ["imap:ops: backing_off for 31s"]


def test_link_back_up_resets_its_downtime() -> None:
    """A link that reconnected (and stayed up) starts a new count when it drops again."""
    down = health.Downtime()
    down.observe({"matrix": "backing_off"}, 0.0)
    assert down.observe({"matrix": "connected"}, 50.0) == {}
    assert down.observe({"matrix": "connected"}, 53.0) == {}  # up long enough: back
    assert down.observe({"matrix": "backing_off"}, 60.0) == {"matrix": 0.0}


def test_unreachable_egress_counts_as_down_but_a_refusing_one_does_not() -> None:
    """An egress whose peer is away is down; one whose entries retry after errors (the peer
    answers) is up."""
    egress = health.egress_states(
        EMPTY, {"pager": "pagerduty", "mail": "smtp"}, {"pager": "unreachable", "mail": "ok"}
    )
    assert egress == {"pager": "pagerduty: unreachable", "mail": "smtp: ok"}
    down = health.Downtime()
    seen = {"egress:pager": egress["pager"], "egress:mail": "smtp: backing_off"}
    down.observe(seen, 0.0)
    assert down.observe(seen, 40.0) == {"egress:pager": 40.0}
    report = health.report({}, egress, EMPTY, NOW, 900, {"egress:pager": 40.0}, 30.0)
    assert report["problems"] == ["pager: pagerduty: unreachable for 40s"]


def test_degraded_component_is_named_with_its_reason() -> None:
    """A degraded Matrix link (a room it cannot join) is a problem with the room named."""
    report = health.report(
        {"matrix": "degraded"},
        {},
        EMPTY,
        NOW,
        900,
        {},
        30.0,
        {"matrix": "not in !private:localhost (invite the bot)"},
    )
    assert report["healthy"] is False
    assert report["problems"] == ["matrix: degraded (not in !private:localhost (invite the bot))"]


def test_flapping_link_keeps_the_time_it_first_went_down() -> None:
    """A link that comes up for a moment and drops again is still down since the first
    drop: 3 s of flapping with a 2 s grace is a problem; after 2 s up it is back."""
    down = health.Downtime()
    down.observe({"matrix": "backing_off"}, 0.0)
    down.observe({"matrix": "connected"}, 1.0)  # up for 0.5 s only
    assert down.observe({"matrix": "backing_off"}, 1.5) == {"matrix": 1.5}
    assert down.observe({"matrix": "backing_off"}, 3.0) == {"matrix": 3.0}
    assert down.observe({"matrix": "connected"}, 3.5) == {}  # up: not reported meanwhile
    assert down.observe({"matrix": "connected"}, 5.5) == {}  # and back for good
    assert down.observe({"matrix": "backing_off"}, 6.0) == {"matrix": 0.0}
