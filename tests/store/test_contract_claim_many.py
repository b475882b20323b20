"""Store contract, worker side: ``claim_many`` (one round trip for a message's ids)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from notifier.models import AttemptOutcome, Status
from notifier.store.base import ClaimMiss, NotificationStore
from tests.store.conftest import ConnectStore, insert, make_notification

LOCK = 30.0
MISSING_ID = "01900000-0000-7000-8000-000000000000"


async def test_claim_many_classifies_each_id(store: NotificationStore, now: datetime) -> None:
    later = now + timedelta(minutes=5)
    due, due2, retry_later, scheduled_later, sent_doc, failed_doc, locked, dead = await insert(
        store,
        make_notification(now),
        make_notification(now, status=Status.RETRYING, next_attempt_at=now),
        make_notification(now, status=Status.RETRYING, next_attempt_at=later),
        make_notification(now, status=Status.SCHEDULED, scheduled_for=later),
        make_notification(now, status=Status.SENT),
        make_notification(now, status=Status.FAILED),
        make_notification(now),
        make_notification(now),
    )
    assert (await store.claim(locked.id, "w1", now, LOCK)).won
    # a worker that died mid-push: its lock has expired by the time w2 claims
    assert (await store.claim(dead.id, "dead", now - timedelta(seconds=LOCK + 5), LOCK)).won
    at = now + timedelta(seconds=1)
    ids = [due.id, due2.id, retry_later.id, scheduled_later.id, sent_doc.id, failed_doc.id]
    ids += [locked.id, dead.id, MISSING_ID, "bad\x00id", due.id]
    results = await store.claim_many(ids, "w2", at, LOCK)
    assert set(results) == set(ids)
    misses = {id: r.miss for id, r in results.items() if not r.won}
    assert misses == {
        retry_later.id: ClaimMiss.NOT_DUE,
        scheduled_later.id: ClaimMiss.NOT_DUE,
        sent_doc.id: ClaimMiss.FINAL,
        failed_doc.id: ClaimMiss.FINAL,
        locked.id: ClaimMiss.LOCKED,
        MISSING_ID: ClaimMiss.MISSING,
        "bad\x00id": ClaimMiss.MISSING,
    }
    assert all(r.notification is None for r in results.values() if not r.won)
    for won in (due, due2, dead):
        doc = results[won.id].notification
        assert doc is not None and doc.id == won.id
        assert (doc.locked_by, doc.locked_at, doc.lock_expiry) == (
            "w2",
            at,
            at + timedelta(seconds=LOCK),
        )
        assert doc.attempts == (2 if won is dead else 1)
        assert (doc.history[-1].worker, doc.history[-1].started_at) == ("w2", at)
        assert await store.get(won.id) == doc
    # the dead worker's unfinished attempt is closed as unknown, as claim does
    dead_doc = results[dead.id].notification
    assert dead_doc is not None
    assert [(a.worker, a.outcome) for a in dead_doc.history] == [
        ("dead", AttemptOutcome.UNKNOWN),
        ("w2", None),
    ]
    # claimed now, so a second claim_many wins nothing
    again = await store.claim_many([due.id, due2.id], "w3", at, LOCK)
    assert {r.miss for r in again.values()} == {ClaimMiss.LOCKED}
    assert await store.claim_many([], "w3", at, LOCK) == {}


async def test_concurrent_claim_many_callers_claim_each_document_exactly_once(
    connect_store: ConnectStore,
    store: NotificationStore,
    now: datetime,
    sized: Callable[[int], int],
) -> None:
    ids = [n.id for n in await insert(store, *(make_notification(now) for _ in range(sized(2000))))]
    claimers = [await connect_store() for _ in range(8)]
    rng = random.Random(2000)
    contenders = {id: set(rng.sample(range(len(claimers)), 3)) for id in ids}

    async def claim_all(worker: int, claimer: NotificationStore) -> list[str]:
        mine = [id for id in ids if worker in contenders[id]]
        # batches in different orders per claimer, so the contended rows cross
        random.Random(worker).shuffle(mine)
        won: list[str] = []
        for start in range(0, len(mine), 50):
            results = await claimer.claim_many(mine[start : start + 50], f"w{worker}", now, LOCK)
            won += [id for id, r in results.items() if r.won]
        return won

    wins = await asyncio.gather(*(claim_all(i, s) for i, s in enumerate(claimers)))
    counts = Counter(id for won in wins for id in won)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    assert all(wins)


async def test_claimers_racing_for_one_document_lose_as_locked(
    connect_store: ConnectStore, store: NotificationStore, now: datetime
) -> None:
    """The losers of a race read LOCKED on both stores, whenever each looked at the document
    (PostgreSQL classifies from the claim's snapshot, where it may still look claimable)."""
    docs = await insert(store, *(make_notification(now) for _ in range(10)))
    claimers = [store, *[await connect_store() for _ in range(3)]]
    for doc in docs:
        results = await asyncio.gather(
            *(c.claim_many([doc.id], f"w{i}", now, LOCK) for i, c in enumerate(claimers))
        )
        outcomes = [r[doc.id] for r in results]
        assert sum(r.won for r in outcomes) == 1
        assert {r.miss for r in outcomes if not r.won} == {ClaimMiss.LOCKED}
