"""A worker's delivery slots, shared by the lanes (docs/design.md section 1, lanes).

One slot is one notification being claimed, pushed or written. A message takes one slot per
id before it claims anything. The transactional lane goes first: its waiters are served
before any bulk waiter, and it may take every slot. Bulk work never takes the last
``reserve`` slots, so a login code finds a slot at once however deep the campaign; and bulk
waiters are served one app at a time in turn (round-robin by message), so one app's
campaign cannot starve another app's bulk work. How many bulk messages of one app wait here
at all is bounded by the consumer's prefetch on that app's queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from notifier.models import Lane


@dataclass(eq=False, slots=True)
class _Waiter:
    n: int
    lane: Lane
    app: str
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LaneSlots:
    """``capacity`` slots; bulk holders together never take more than ``capacity - reserve``."""

    def __init__(self, capacity: int, reserve: int) -> None:
        self.capacity = max(1, capacity)
        self.reserve = max(0, min(reserve, self.capacity - 1))
        self.free = self.capacity
        self.in_use = {lane: 0 for lane in Lane}
        self._transactional: deque[_Waiter] = deque()
        self._bulk: dict[str, deque[_Waiter]] = {}  # by app, in turn order (front goes next)

    @property
    def bulk_limit(self) -> int:
        return self.capacity - self.reserve

    def limit(self, lane: Lane) -> int:
        """The most slots ``lane`` may hold: a bigger message is delivered in parts."""
        return self.capacity if lane is Lane.TRANSACTIONAL else self.bulk_limit

    @property
    def waiting(self) -> dict[Lane, int]:
        """Messages (or message parts) waiting for slots, by lane."""
        bulk = sum(len(queue) for queue in self._bulk.values())
        return {Lane.TRANSACTIONAL: len(self._transactional), Lane.BULK: bulk}

    @asynccontextmanager
    async def hold(self, n: int, lane: Lane, app: str = "") -> AsyncIterator[Held]:
        """Take ``n`` slots (at most :meth:`limit`); the holder may give them back one by one."""
        n = max(1, min(n, self.limit(lane)))
        await self._acquire(_Waiter(n, lane, app))
        held = Held(self, n, lane)
        try:
            yield held
        finally:
            held.release_all()

    def _fits(self, w: _Waiter) -> bool:
        if w.n > self.free:
            return False
        return w.lane is Lane.TRANSACTIONAL or self.in_use[Lane.BULK] + w.n <= self.bulk_limit

    def _take(self, w: _Waiter) -> None:
        self.free -= w.n
        self.in_use[w.lane] += w.n

    async def _acquire(self, w: _Waiter) -> None:
        nobody_ahead = not self._transactional and (w.lane is Lane.TRANSACTIONAL or not self._bulk)
        if nobody_ahead and self._fits(w):
            self._take(w)
            return
        if w.lane is Lane.TRANSACTIONAL:
            self._transactional.append(w)
        else:
            self._bulk.setdefault(w.app, deque()).append(w)
        try:
            await w.future
        except asyncio.CancelledError:
            if w.future.done() and not w.future.cancelled():
                self._release(w.n, w.lane)  # granted just as we were cancelled: give it back
            else:
                self._forget(w)
                self._wake()  # a smaller request behind us may fit now
            raise

    def _forget(self, w: _Waiter) -> None:
        if w.lane is Lane.TRANSACTIONAL:
            self._transactional.remove(w)
            return
        queue = self._bulk[w.app]
        queue.remove(w)
        if not queue:
            del self._bulk[w.app]

    def _release(self, n: int, lane: Lane) -> None:
        self.free += n
        self.in_use[lane] -= n
        self._wake()

    def _wake(self) -> None:
        # transactional first, in order; bulk only while no transactional waiter is left
        while self._transactional and self._fits(self._transactional[0]):
            self._grant(self._transactional.popleft())
        while self._bulk and not self._transactional:
            app = next(iter(self._bulk))
            queue = self._bulk.pop(app)
            if not self._fits(queue[0]):
                self._bulk = {app: queue, **self._bulk}  # still its turn
                return
            self._grant(queue.popleft())
            if queue:
                self._bulk[app] = queue  # to the back of the turn order

    def _grant(self, w: _Waiter) -> None:
        self._take(w)
        w.future.set_result(None)


class Held:
    """Slots taken from :class:`LaneSlots`, given back as each delivery finishes."""

    __slots__ = ("_count", "_lane", "_slots")

    def __init__(self, slots: LaneSlots, count: int, lane: Lane) -> None:
        self._slots = slots
        self._count = count
        self._lane = lane

    def release_one(self) -> None:
        if self._count:
            self._count -= 1
            self._slots._release(1, self._lane)

    def release_all(self) -> None:
        if self._count:
            count, self._count = self._count, 0
            self._slots._release(count, self._lane)
