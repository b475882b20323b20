"""The slots the lanes share (workers/slots.py): transactional first and never short of its
reserve, bulk in turn between apps."""

from __future__ import annotations

import asyncio

from notifier.models import Lane
from workers.slots import Held, LaneSlots

T, B = Lane.TRANSACTIONAL, Lane.BULK


async def settle() -> None:
    """Let every runnable task run until all of them wait again."""
    for _ in range(5):
        await asyncio.sleep(0)


class Taker:
    """Tasks that take slots and record the order they got them in; released by the test."""

    def __init__(self, slots: LaneSlots) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.held: dict[str, Held] = {}
        self._release: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def take(self, name: str, n: int, lane: Lane, app: str = "") -> None:
        release = self._release[name] = asyncio.Event()

        async def run() -> None:
            async with self.slots.hold(n, lane, app) as held:
                self.order.append(name)
                self.held[name] = held
                await release.wait()

        self.tasks.append(asyncio.create_task(run()))

    def release(self, name: str) -> None:
        self._release[name].set()

    async def close(self) -> None:
        for event in self._release.values():
            event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_bulk_never_takes_the_reserve_and_transactional_gets_it_at_once() -> None:
    slots = LaneSlots(capacity=10, reserve=3)
    taker = Taker(slots)
    try:
        taker.take("bulk-1", 5, B, "a")
        taker.take("bulk-2", 5, B, "a")  # only 2 of the 7 bulk slots are left: waits
        await settle()
        assert taker.order == ["bulk-1"]
        assert slots.in_use[B] == 5 and slots.waiting[B] == 1
        taker.take("login", 3, T)
        await settle()
        assert taker.order == ["bulk-1", "login"]  # the reserve was free for it
        assert slots.in_use == {T: 3, B: 5}
    finally:
        await taker.close()
    assert slots.free == 10 and slots.in_use == {T: 0, B: 0}


async def test_a_waiting_transactional_message_goes_before_every_waiting_bulk_one() -> None:
    slots = LaneSlots(capacity=4, reserve=1)
    taker = Taker(slots)
    try:
        taker.take("t-1", 4, T)  # every slot
        await settle()
        taker.take("bulk", 1, B, "a")
        taker.take("t-2", 2, T)
        await settle()
        assert taker.order == ["t-1"]
        taker.release("t-1")
        await settle()
        # t-2 came later but is served first; bulk fits beside it
        assert taker.order == ["t-1", "t-2", "bulk"]
    finally:
        await taker.close()


async def test_bulk_waiters_are_served_one_app_at_a_time_in_turn() -> None:
    """App a queued five messages before app b queued two: once slots free up, b does not
    wait for all of a's."""
    slots = LaneSlots(capacity=2, reserve=1)  # one bulk message at a time
    taker = Taker(slots)
    try:
        taker.take("first", 1, B, "a")
        await settle()
        for i in range(5):
            taker.take(f"a{i}", 1, B, "a")
        await settle()
        for i in range(2):
            taker.take(f"b{i}", 1, B, "b")
        await settle()
        for name in ["first", "a0", "b0", "a1", "b1", "a2", "a3"]:
            while name not in taker.order:  # each finishes as soon as it started
                await settle()
            taker.release(name)
        await settle()
    finally:
        await taker.close()
    assert taker.order == ["first", "a0", "b0", "a1", "b1", "a2", "a3", "a4"]


async def test_a_message_bigger_than_its_lane_limit_takes_the_limit() -> None:
    slots = LaneSlots(capacity=8, reserve=2)
    assert slots.limit(B) == 6 and slots.limit(T) == 8
    async with slots.hold(50, B, "a") as held:
        assert slots.in_use[B] == 6
        held.release_one()
        assert slots.in_use[B] == 5 and slots.free == 3
    assert slots.free == 8


async def test_a_cancelled_waiter_leaves_no_trace_and_lets_the_next_one_in() -> None:
    slots = LaneSlots(capacity=3, reserve=1)
    taker = Taker(slots)
    try:
        taker.take("t", 2, T)
        await settle()
        taker.take("big-bulk", 2, B, "a")  # waits: only one slot left
        taker.take("small-bulk", 1, B, "b")  # waits behind a's turn
        await settle()
        assert taker.order == ["t"]
        taker.tasks[1].cancel()
        await settle()
        assert taker.order == ["t", "small-bulk"]
        assert slots.waiting == {T: 0, B: 0}
    finally:
        await taker.close()
    assert slots.free == 3
