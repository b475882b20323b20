"""A batch's items are validated in slices, the event loop given back between them: a
transactional request's steps on the same replica never wait for all 500 items."""

from __future__ import annotations

import asyncio
import itertools

from api.routes_notifications import ITEMS_PER_TURN, _in_turns


async def test_other_requests_run_between_a_batchs_slices() -> None:
    seen: list[str | int] = []

    async def other_request() -> None:
        while True:
            seen.append("other")
            await asyncio.sleep(0)

    def item(i: int) -> int:
        seen.append(i)
        return i * 2

    other = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    try:
        out = await _in_turns(500, item)
    finally:
        other.cancel()
    assert out == [i * 2 for i in range(500)]
    runs = itertools.groupby(seen, lambda s: s != "other")
    longest = max(len(list(run)) for is_item, run in runs if is_item)
    assert longest == ITEMS_PER_TURN  # never all 500 in one go


async def test_fewer_items_than_a_slice_run_at_once() -> None:
    assert await _in_turns(3, lambda i: i) == [0, 1, 2]
    assert await _in_turns(0, lambda i: i) == []
