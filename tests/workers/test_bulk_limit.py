"""The bulk lane's adaptive limit (workers/bulk_limit.py), on a fake clock."""

from __future__ import annotations

from workers import bulk_limit
from workers.bulk_limit import AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(limit: AdaptiveLimit, clock: Clock, hold: float, intervals: int) -> None:
    """``intervals`` decision intervals in which every delivery holds its slot ``hold`` s."""
    for _ in range(intervals):
        for _ in range(bulk_limit.MIN_SAMPLES):
            limit.observe(hold)
        clock.now += bulk_limit.INTERVAL_SECONDS
        limit.observe(hold)


def test_it_grows_to_its_maximum_while_hold_times_stay_flat() -> None:
    """Providers that take 40 ms whatever the load: the limit opens fully."""
    clock = Clock()
    limit = AdaptiveLimit(192, minimum=8, clock=clock)
    assert limit.limit == 8
    run(limit, clock, 0.040, intervals=20)
    assert limit.limit == 192


def test_it_shrinks_once_hold_times_climb_well_above_the_floor_and_recovers() -> None:
    clock = Clock()
    limit = AdaptiveLimit(192, minimum=8, clock=clock)
    run(limit, clock, 0.010, intervals=20)  # the floor: 10 ms
    assert limit.limit == 192
    run(limit, clock, 0.060, intervals=3)  # queues build up: 60 ms > 2 x 10 ms + 2 ms
    assert limit.limit == int(int(int(192 * 0.75) * 0.75) * 0.75)
    run(limit, clock, 0.015, intervals=1)  # back near the floor: it grows again
    assert limit.limit > int(int(int(192 * 0.75) * 0.75) * 0.75)
    run(limit, clock, 0.060, intervals=40)
    assert limit.limit == 8  # never below the minimum


def test_an_interval_with_too_few_deliveries_decides_nothing() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, minimum=8, clock=clock)
    clock.now += 5.0
    for _ in range(bulk_limit.MIN_SAMPLES - 1):
        limit.observe(0.5)
    assert limit.limit == 8 and limit.floor is None


def test_the_floor_forgets_what_is_older_than_its_window() -> None:
    """A floor learnt long ago (another load, another provider) does not hold the limit
    down for ever: after the window, the new hold time is the floor."""
    clock = Clock()
    limit = AdaptiveLimit(64, minimum=8, clock=clock)
    run(limit, clock, 0.005, intervals=10)
    run(limit, clock, 0.050, intervals=int(bulk_limit.WINDOW_SECONDS / 0.25) + 2)
    assert limit.floor is not None and abs(limit.floor - 0.050) < 1e-9
    run(limit, clock, 0.050, intervals=10)
    assert limit.limit == 64
