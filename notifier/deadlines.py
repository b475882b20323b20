"""Coarse deadlines for many concurrent awaits, without a loop timer per await.

``asyncio.timeout`` arms and disarms a loop timer on every use: at a few thousand pushes a
second that was about 6 % of a worker's CPU. The provider clients have their own request
timeouts; this bound only guards against an await that never returns. So one check per
``period`` cancels every task that has overrun its deadline, and the overrun task sees
:class:`TimeoutError` where it waited, as with ``asyncio.timeout``, up to ``period`` late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from notifier.eventloop import RunningLoop

T = TypeVar("T")


class Deadlines:
    """Deadlines of the tasks currently awaiting in :meth:`bound` (one per task at a time)."""

    def __init__(self, period_seconds: float = 1.0) -> None:
        self._period = period_seconds
        self._due: dict[asyncio.Task[object], float] = {}
        self._cancelled: set[asyncio.Task[object]] = set()
        self._check_handle: asyncio.TimerHandle | None = None
        self._check_loop: asyncio.AbstractEventLoop | None = None
        self._running = RunningLoop()

    async def bound(self, awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable``; raise :class:`TimeoutError` once it has run ``seconds`` (+ period).

        A coroutine, not a context manager: a generator-based one costs more than the timer.
        """
        loop = self._running.get()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Deadlines.bound() needs a running task")
        self._due[task] = loop.time() + seconds
        if self._check_handle is None or self._check_loop is not loop:  # (a new loop: tests)
            self._check_handle = loop.call_later(self._period, self._check)
            self._check_loop = loop
        try:
            return await awaitable
        except asyncio.CancelledError:
            # ours: the task is still awaiting here when _check cancels it (returning takes it
            # out of _due at once), so the cancellation lands here
            if task in self._cancelled and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            del self._due[task]
            self._cancelled.discard(task)

    def _check(self) -> None:
        self._check_handle = None
        if not self._due:
            return  # idle: the next bound() re-arms the check
        loop = self._running.get()
        now = loop.time()
        for task, deadline in self._due.items():
            if deadline <= now and task not in self._cancelled:
                self._cancelled.add(task)
                task.cancel()
        self._check_handle = loop.call_later(self._period, self._check)
