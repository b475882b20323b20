"""Coarse deadlines: an overrun await ends in TimeoutError; nothing else is touched."""

from __future__ import annotations

import asyncio

import pytest

from notifier.deadlines import Deadlines

PERIOD = 0.02


async def test_an_await_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(PERIOD)
    never = asyncio.get_running_loop().create_future()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(deadlines.bound(never, 0.05), 5)
    assert asyncio.get_running_loop().time() - started < 2
    assert never.cancelled()


async def test_only_the_overrun_task_is_cancelled() -> None:
    deadlines = Deadlines(PERIOD)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    overrun = asyncio.create_task(deadlines.bound(asyncio.Event().wait(), 0.05))
    patient = asyncio.create_task(deadlines.bound(slow(), 60))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(overrun, 5)
    assert not patient.done()
    release.set()
    assert await asyncio.wait_for(patient, 5) == "done"


async def test_a_finished_await_leaves_its_task_alone() -> None:
    deadlines = Deadlines(PERIOD)

    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await deadlines.bound(quick(), 0.01) == 7
    # well past that deadline and several checks later, this task is not cancelled
    await asyncio.sleep(PERIOD * 5)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_an_outside_cancel_stays_a_cancel() -> None:
    deadlines = Deadlines(PERIOD)
    task = asyncio.create_task(deadlines.bound(asyncio.Event().wait(), 60))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
