"""Whether intake is in a storm: the arrival rate over the last half second.

During a storm the inbox worker and the outbox wait for a lull (at most a second at a time)
so that intake, whose 250 waits for a commit on the same store thread and CPU, goes first;
the messages are already durable. The rate is judged over half a second, not 100 ms:
group commit answers the sessions in bunches, so a steady 200 messages/s arrives in groups
of 10-20 that a 100 ms window took for a storm of 300/s (holding back processing and pages
for up to a second, the tail of intake-to-page latency).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 0.5


class Arrivals:
    """Counts arrivals over a sliding window; memory bounded by the storm's count."""

    def __init__(self, storm_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._count = max(1, round(storm_per_s * WINDOW_S))
        self._clock = clock
        self._times: deque[float] = deque(maxlen=self._count)

    def arrived(self) -> None:
        """One message was accepted."""
        self._times.append(self._clock())

    def storm(self) -> bool:
        """At least `storm_per_s` messages a second arrived over the last WINDOW_S."""
        now = self._clock()
        while self._times and now - self._times[0] > WINDOW_S:
            self._times.popleft()
        return len(self._times) >= self._count
