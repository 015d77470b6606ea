"""Intake storm detection (gateway.run.arrivals): a rate over half a second, so the bunches
in which group commit answers a steady load are not taken for a storm."""

from __future__ import annotations

from gateway.run.arrivals import Arrivals


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steady_200_per_second_in_bunches_of_20_is_no_storm() -> None:
    """200 messages/s arriving as 20 at once every 100 ms never reads as a storm of 300/s."""
    clock = _Clock()
    arrivals = Arrivals(300.0, clock)
    for _ in range(50):
        for _ in range(20):
            arrivals.arrived()
        assert not arrivals.storm()
        clock.now += 0.1


def test_a_burst_above_the_rate_is_a_storm_until_it_passes() -> None:
    """150 arrivals within half a second (300/s) is a storm; half a second later it is not."""
    clock = _Clock()
    arrivals = Arrivals(300.0, clock)
    for _ in range(149):
        arrivals.arrived()
        clock.now += 0.003
    assert not arrivals.storm()
    arrivals.arrived()
    assert arrivals.storm()
    clock.now += 0.51
    assert not arrivals.storm()
