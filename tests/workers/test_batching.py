"""MicroBatcher: how requests are grouped into store calls (timer and group-commit modes).

The store call is a recording stand-in here: what is under test is the grouping, which the
worker-process tests exercise against real PostgreSQL only as a whole.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support import wait_for
from workers.batching import MicroBatcher


class Recorder(MicroBatcher[int, int]):
    """Doubles each request; a batch returns when the test releases it."""

    def __init__(
        self, *, max_batch: int = 100, max_delay_seconds: float, max_in_flight: int = 0
    ) -> None:
        super().__init__(
            max_batch=max_batch, max_delay_seconds=max_delay_seconds, max_in_flight=max_in_flight
        )
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None

    async def _run(self, requests: list[int]) -> list[int]:
        self.batches.append(list(requests))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [r * 2 for r in requests]

    async def submit(self, request: int) -> int:
        return await self._submit(request)


async def test_timer_mode_groups_what_arrives_within_the_delay() -> None:
    batcher = Recorder(max_delay_seconds=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert batcher.batches == [[0, 1, 2, 3, 4]]


async def test_a_full_batch_goes_at_once() -> None:
    batcher = Recorder(max_batch=3, max_delay_seconds=30)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3))), 5)
    assert results == [0, 2, 4] and batcher.batches == [[0, 1, 2]]


async def test_group_commit_sends_at_once_then_groups_while_busy() -> None:
    # a 30 s delay that is never waited for: group commit has no timer
    batcher = Recorder(max_delay_seconds=30, max_in_flight=1)
    batcher.release.clear()
    first = asyncio.ensure_future(batcher.submit(1))
    await wait_for(lambda: batcher.batches == [[1]], timeout=5, what="the first batch sent")
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)  # they queue behind the batch in flight
    assert batcher.batches == [[1]]
    batcher.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == [2, 4, 6, 8]
    assert batcher.batches == [[1], [2, 3, 4]]


async def test_group_commit_allows_max_in_flight_batches_at_once() -> None:
    batcher = Recorder(max_delay_seconds=30, max_in_flight=2)
    batcher.release.clear()
    calls = [asyncio.ensure_future(batcher.submit(1))]
    await wait_for(lambda: len(batcher.batches) == 1, timeout=5, what="batch 1")
    calls.append(asyncio.ensure_future(batcher.submit(2)))
    await wait_for(lambda: len(batcher.batches) == 2, timeout=5, what="batch 2")
    calls += [asyncio.ensure_future(batcher.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0)
    assert batcher.batches == [[1], [2]]
    batcher.release.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [2, 4, 6, 8]
    assert batcher.batches == [[1], [2], [3, 4]]


@pytest.mark.parametrize("in_flight", [0, 2])
async def test_a_failed_batch_raises_to_each_of_its_callers(in_flight: int) -> None:
    batcher = Recorder(max_delay_seconds=0.01, max_in_flight=in_flight)
    batcher.fail = ConnectionError("store down")
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_close_sends_what_is_queued_and_waits_for_it() -> None:
    batcher = Recorder(max_delay_seconds=30)
    pending = asyncio.ensure_future(batcher.submit(7))
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.close(), 5)
    assert pending.done() and pending.result() == 14
