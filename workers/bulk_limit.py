"""How many slots bulk work may hold right now: a delay-based adaptive limit.

On a saturated machine (providers answering at once, CPU the bottleneck) more bulk
deliveries in flight buy no throughput, only queueing: every shared queue (the store's, the
broker's, the provider connections') gets longer, and a transactional notification waits
behind them all. Measured on 2 cores (``notifier bench --lanes``, docs/operations.md): 192
bulk slots per worker gave about the bulk rate of 48, and 5 times the transactional wait.

So the limit follows the rule of TCP Vegas and of Netflix's concurrency-limits: it watches
how long a bulk delivery holds its slot (claim, push, outcome write), averaged over short
intervals. While that stays near the lowest average seen lately, the limit grows by a
quarter each interval; once it is above ``tolerance`` times that floor (plus a couple of
milliseconds), the limit shrinks by a quarter. It starts low and grows, so the floor is
learned before the queues fill. With providers that take tens of milliseconds the hold time
hardly depends on the number in flight, and the limit stays at its maximum.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

INTERVAL_SECONDS = 0.25  # one decision per interval
WINDOW_SECONDS = 10.0  # the floor is the lowest interval average in this window
MIN_SAMPLES = 5  # an interval with fewer deliveries decides nothing (it carries over)
TOLERANCE = 2.0
SLACK_SECONDS = 0.002  # below this, a difference is timer noise
GROW, SHRINK = 1.25, 0.75


class AdaptiveLimit:
    """A limit between ``minimum`` and ``maximum`` fed by :meth:`observe`."""

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = self.minimum
        self._clock = clock
        self._started = clock()
        self._sum = 0.0
        self._count = 0
        self._averages: deque[tuple[float, float]] = deque()  # (interval end, average)

    @property
    def floor(self) -> float | None:
        """The lowest interval average within the window (None before the first)."""
        return min(avg for _, avg in self._averages) if self._averages else None

    def observe(self, seconds: float) -> None:
        """One bulk delivery held its slot this long."""
        self._sum += seconds
        self._count += 1
        now = self._clock()
        if now - self._started >= INTERVAL_SECONDS and self._count >= MIN_SAMPLES:
            self._decide(now, self._sum / self._count)
            self._started, self._sum, self._count = now, 0.0, 0

    def _decide(self, now: float, average: float) -> None:
        while self._averages and self._averages[0][0] < now - WINDOW_SECONDS:
            self._averages.popleft()
        floor = min(self.floor or average, average)
        self._averages.append((now, average))
        if average > floor * TOLERANCE + SLACK_SECONDS:
            self.limit = max(self.minimum, int(self.limit * SHRINK))
        else:
            self.limit = min(self.maximum, max(self.limit + 1, int(self.limit * GROW)))
