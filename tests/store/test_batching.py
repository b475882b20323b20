"""Batched store access: how requests are grouped into store calls, and what each caller gets.

MicroBatcher's grouping is tested with a recording call (timer, group-commit and
hold-full-batches modes); BatchedStore's claims and outcomes on each real store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import pytest

from notifier.models import AttemptOutcome, Status
from notifier.store.base import ClaimMiss, ClaimResult, NotificationStore, Outcome
from notifier.store.batching import BatchedStore, MicroBatcher
from tests.store.conftest import insert, make_notification
from tests.support import wait_for


class Recorder(MicroBatcher[int, int]):
    """Doubles each request; a batch returns when the test releases it."""

    def __init__(
        self,
        *,
        max_batch: int = 100,
        max_delay_seconds: float,
        max_in_flight: int = 0,
        hold_full_batches: bool = False,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_delay_seconds=max_delay_seconds,
            max_in_flight=max_in_flight,
            hold_full_batches=hold_full_batches,
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


class Weighted(Recorder):
    """A request weighs its own value (as a claim weighs its ids, an insert its documents)."""

    def _weight(self, request: int) -> int:
        return request


async def test_held_full_batches_wait_for_the_batch_in_flight_and_split_at_max_batch() -> None:
    # the API writer's rounds: one in flight, none above max_batch but for its first request
    batcher = Weighted(max_batch=10, max_delay_seconds=30, max_in_flight=1, hold_full_batches=True)
    batcher.release.clear()
    calls = [asyncio.ensure_future(batcher.submit(4))]
    await wait_for(lambda: batcher.batches == [[4]], timeout=5, what="the first batch sent")
    calls += [asyncio.ensure_future(batcher.submit(i)) for i in (6, 5, 12, 3)]
    await asyncio.sleep(0.05)  # full (26 of 10) yet held: one batch is in flight
    assert batcher.batches == [[4]]
    batcher.release.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [8, 12, 10, 24, 6]
    assert batcher.batches == [[4], [6], [5], [12], [3]]


async def test_held_batches_go_when_the_subclass_allows_it() -> None:
    class Gated(Recorder):
        open = False

        def _can_send(self) -> bool:
            return self.open and super()._can_send()

    batcher = Gated(max_delay_seconds=30, max_in_flight=1, hold_full_batches=True)
    call = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    assert batcher.batches == []
    batcher.open = True
    batcher.wake()
    assert await asyncio.wait_for(call, 5) == 2 and batcher.batches == [[1]]


class Counting:
    """The real store, with a record of the grouped calls it receives."""

    def __init__(self, store: NotificationStore) -> None:
        self.store = store
        self.claims: list[list[str]] = []
        self.completes: list[list[str]] = []
        self.gate = asyncio.Event()  # a sent complete_many waits for it: "in flight"
        self.gate.set()

    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        self.claims.append(list(ids))
        return await self.store.claim_many(ids, worker_id, now, lock_seconds)

    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        self.completes.append([id for id, _ in items])
        await self.gate.wait()
        return await self.store.complete_many(worker_id, items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def batched(store: NotificationStore, worker_id: str = "w1") -> tuple[BatchedStore, Counting]:
    counting = Counting(store)
    return BatchedStore(cast(NotificationStore, counting), worker_id, 30.0), counting


async def test_claims_that_arrive_together_share_one_claim_many(
    store: NotificationStore, now: datetime
) -> None:
    a, b, c = await insert(store, *(make_notification(now) for _ in range(3)))
    access, counting = batched(store)
    first, second, third = await asyncio.gather(
        access.claim([a.id, b.id]), access.claim([b.id, c.id]), access.claim([c.id])
    )
    assert counting.claims == [[a.id, b.id, c.id]]
    # an id asked for twice in one group (two messages with the same wake-up) is won once:
    # the later asker sees it locked
    assert first[a.id].won and first[b.id].won
    assert second[b.id].miss is ClaimMiss.LOCKED and second[c.id].won
    assert third[c.id].miss is ClaimMiss.LOCKED
    won = first[a.id].notification
    assert won is not None and won.locked_by == "w1" and won.locked_at is not None
    await access.close()


async def test_outcomes_are_written_together_in_id_order_fenced_per_caller(
    store: NotificationStore, now: datetime
) -> None:
    notes = await insert(store, *(make_notification(now) for _ in range(4)))
    ids = sorted(n.id for n in notes)
    access, counting = batched(store)
    claims = await access.claim(ids[:3])
    assert all(claims[i].won for i in ids[:3])
    assert (await store.claim_many([ids[3]], "w2", now, 30.0))[ids[3]].won  # not ours
    done = Outcome(Status.SENT, AttemptOutcome.SENT, now, 200)
    results = await asyncio.gather(*(access.complete(i, done) for i in reversed(ids)))
    # one complete_many (nothing was in flight), rows in id order (no deadlock between
    # concurrent multi-row updates); each caller learns its own fate
    assert counting.completes == [ids]
    assert results == [False, True, True, True]
    for i in ids[:3]:
        stored = await store.get(i)
        assert stored is not None and stored.status is Status.SENT
    await access.close()


async def test_outcomes_queue_behind_two_batches_in_flight(
    store: NotificationStore, now: datetime
) -> None:
    notes = await insert(store, *(make_notification(now) for _ in range(5)))
    ids = [n.id for n in notes]
    access, counting = batched(store)
    assert all(r.won for r in (await access.claim(ids)).values())
    done = Outcome(Status.SENT, AttemptOutcome.SENT, now, 200)
    counting.gate.clear()
    first = asyncio.ensure_future(access.complete(ids[0], done))
    await wait_for(lambda: len(counting.completes) == 1, timeout=5, what="batch 1")
    second = asyncio.ensure_future(access.complete(ids[1], done))
    await wait_for(lambda: len(counting.completes) == 2, timeout=5, what="batch 2")
    rest = [asyncio.ensure_future(access.complete(i, done)) for i in reversed(ids[2:])]
    await asyncio.sleep(0.05)  # no timer: they wait for a batch in flight to return
    assert counting.completes == [[ids[0]], [ids[1]]]
    counting.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, second, *rest), 30) == [True] * 5
    assert counting.completes == [[ids[0]], [ids[1]], sorted(ids[2:])]
    await access.close()
