"""Store contract, sweeper side: republish guards, lock recovery, counts (every implementation)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from notifier.models import AttemptOutcome, Status, Wake
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import NotificationStore, Outcome, RecoveredLock
from tests.store.conftest import ConnectStore, insert, make_notification

GRACE = 10.0
STALE = 60.0


async def take(store: NotificationStore, now: datetime, limit: int = 100) -> list[Wake]:
    return await store.take_due_for_publish(
        now, limit=limit, unpublished_grace_seconds=GRACE, stale_published_seconds=STALE
    )


async def test_take_due_for_publish_takes_each_category_once(
    store: NotificationStore, now: datetime
) -> None:
    old = now - timedelta(seconds=GRACE + 1)
    recent = now - timedelta(seconds=GRACE - 1)
    due = now - timedelta(seconds=1)
    later = now + timedelta(seconds=30)
    n = {
        "scheduled_due": make_notification(old, status=Status.SCHEDULED, scheduled_for=due),
        "scheduled_later": make_notification(old, status=Status.SCHEDULED, scheduled_for=later),
        "retrying_due": make_notification(old, status=Status.RETRYING, next_attempt_at=due),
        "retrying_later": make_notification(old, status=Status.RETRYING, next_attempt_at=later),
        "pending_old": make_notification(old),
        "pending_in_grace": make_notification(recent),
        "published_stale": make_notification(old, published_at=now - timedelta(seconds=STALE + 1)),
        "published_fresh": make_notification(old, published_at=now - timedelta(seconds=STALE - 1)),
        "locked": make_notification(old),
        "sent": make_notification(old, status=Status.SENT),
        "cancelled": make_notification(old, status=Status.CANCELLED),
    }
    await insert(store, *n.values())
    assert (await store.claim(n["locked"].id, "w1", old, 3600)).won

    taken = await take(store, now)
    expected = {"scheduled_due", "retrying_due", "pending_old", "published_stale"}
    assert len(taken) == len(expected)
    assert set(taken) == {n[k].wake for k in expected}
    for key in expected:
        doc = await store.get(n[key].id)
        assert doc is not None and doc.published_at == now
    assert await take(store, now) == []  # taken documents are published now
    # once a category's time comes, it is taken too
    assert n["pending_in_grace"].wake in await take(store, now + timedelta(seconds=2))


async def test_claimed_since_published_is_not_republished(
    store: NotificationStore, now: datetime
) -> None:
    published = now - timedelta(seconds=STALE + 10)
    [n] = await insert(store, make_notification(published, published_at=published))
    # claimed after the publish, and its lock expired: that is recover_expired_locks' work
    await store.claim(n.id, "w1", published + timedelta(seconds=1), 5)
    assert await take(store, now) == []


async def test_concurrent_sweepers_take_disjoint_sets(
    connect_store: ConnectStore, store: NotificationStore, now: datetime
) -> None:
    old = now - timedelta(seconds=GRACE + 1)
    pending = (make_notification(old) for _ in range(400))
    # due retries whose last publish came before they fell due: the other part of the take
    retrying = (
        make_notification(
            old, status=Status.RETRYING, attempts=1, next_attempt_at=now, published_at=old
        )
        for _ in range(200)
    )
    wakes = {n.wake for n in await insert(store, *pending, *retrying)}
    sweepers = [store, await connect_store(), await connect_store()]

    async def sweep(sweeper: NotificationStore) -> list[Wake]:
        taken: list[Wake] = []
        while batch := await take(sweeper, now, limit=50):
            taken += batch
        return taken

    results = await asyncio.gather(*(sweep(s) for s in sweepers))
    everything = [wake for taken in results for wake in taken]
    assert len(everything) == len(set(everything))  # nothing taken twice
    assert set(everything) == wakes  # nothing lost


async def test_unmark_published_lets_the_next_round_retry(
    store: NotificationStore, now: datetime
) -> None:
    old = now - timedelta(seconds=GRACE + 1)
    a, b = await insert(store, make_notification(old), make_notification(old))
    assert set(await take(store, now)) == {a.wake, b.wake}
    await store.unmark_published([a.id])
    doc = await store.get(a.id)
    assert doc is not None and doc.published_at is None
    assert await take(store, now) == [a.wake]


async def test_recover_expired_locks_resend_policy(store: NotificationStore, now: datetime) -> None:
    expired, live = await insert(store, make_notification(now), make_notification(now))
    await store.claim(expired.id, "w1", now, 5)
    await store.claim(live.id, "w1", now, 3600)
    later = now + timedelta(seconds=6)
    recovered = await store.recover_expired_locks(
        later, limit=10, policy=UnknownOutcomePolicy.RESEND
    )
    assert recovered == [
        RecoveredLock(id=expired.id, unknown_attempt=True, republish=True, app="a")
    ]
    doc = await store.get(expired.id)
    assert doc is not None
    assert (doc.status, doc.locked_by, doc.published_at) == (Status.PENDING, None, later)
    assert doc.history[-1].outcome is AttemptOutcome.UNKNOWN
    assert (await store.claim(expired.id, "w2", later, 30)).won
    assert (
        await store.recover_expired_locks(later, limit=10, policy=UnknownOutcomePolicy.RESEND) == []
    )
    live_doc = await store.get(live.id)
    assert live_doc is not None and live_doc.locked_by == "w1"


async def test_recover_expired_locks_fail_policy(store: NotificationStore, now: datetime) -> None:
    [n] = await insert(store, make_notification(now))
    await store.claim(n.id, "w1", now, 5)
    later = now + timedelta(seconds=6)
    recovered = await store.recover_expired_locks(later, limit=10, policy=UnknownOutcomePolicy.FAIL)
    assert recovered == [RecoveredLock(id=n.id, unknown_attempt=True, republish=False, app="a")]
    doc = await store.get(n.id)
    assert doc is not None
    assert (doc.status, doc.locked_by) == (Status.FAILED, None)
    assert doc.last_error is not None and doc.last_error.code == "outcome_unknown"
    assert doc.history[-1].outcome is AttemptOutcome.UNKNOWN
    assert not (await store.claim(n.id, "w2", later, 30)).won


async def test_recover_expired_locks_respects_limit(
    store: NotificationStore, now: datetime
) -> None:
    ns = await insert(store, *(make_notification(now) for _ in range(5)))
    for n in ns:
        await store.claim(n.id, "w1", now, 5)
    later = now + timedelta(seconds=6)
    policy = UnknownOutcomePolicy.RESEND
    first = await store.recover_expired_locks(later, limit=3, policy=policy)
    rest = await store.recover_expired_locks(later, limit=3, policy=policy)
    assert (len(first), len(rest)) == (3, 2)
    assert {r.id for r in first + rest} == {n.id for n in ns}


async def test_counts_by_status_lists_every_status(store: NotificationStore, now: datetime) -> None:
    await insert(
        store,
        make_notification(now),
        make_notification(now),
        make_notification(now, status=Status.SENT),
        make_notification(now, app="b", status=Status.FAILED),
    )
    counts = await store.counts_by_status()
    assert counts == {s: 0 for s in Status} | {Status.PENDING: 2, Status.SENT: 1, Status.FAILED: 1}
    counts_a = await store.counts_by_status("a")
    assert counts_a == {s: 0 for s in Status} | {Status.PENDING: 2, Status.SENT: 1}
    assert await store.counts_by_status("nobody") == dict.fromkeys(Status, 0)


async def test_counts_by_status_open_only_counts_the_backlog(
    store: NotificationStore, now: datetime
) -> None:
    """``open_only`` counts pending/scheduled/retrying as they are and reads final ones as 0."""
    open_one = make_notification(now)
    final_one = make_notification(now)
    await store.insert_many([open_one, final_one])
    claims = await store.claim_many([final_one.id], "w1", now, 30)
    assert claims[final_one.id].won
    await store.complete(final_one.id, "w1", Outcome(Status.SENT, AttemptOutcome.SENT, now))
    counts = await store.counts_by_status(open_only=True)
    assert counts == {**dict.fromkeys(Status, 0), Status.PENDING: 1}
    full = await store.counts_by_status()
    assert full[Status.PENDING] == 1 and full[Status.SENT] == 1
    mine = await store.counts_by_status(open_one.app, open_only=True)
    assert mine[Status.PENDING] == 1


def _retry_after(finished: datetime, seconds: float) -> Outcome:
    return Outcome(
        status=Status.RETRYING,
        attempt_outcome=AttemptOutcome.RETRY,
        finished_at=finished,
        provider_status=503,
        next_attempt_at=finished + timedelta(seconds=seconds),
    )


async def test_mark_published_leaves_a_document_that_moved_on_alone(
    store: NotificationStore, now: datetime
) -> None:
    """The API marks ids once the broker confirmed, and a fast worker may be first: a mark
    on a document already claimed (being pushed, or back as ``retrying``) would pass an old
    wake-up off as the retry's, and the retry would wait for the lost-wake-up take."""
    fresh, pushing, retrying = await insert(
        store, make_notification(now), make_notification(now), make_notification(now)
    )
    claimed = await store.claim_many([pushing.id, retrying.id], "w1", now, 300)
    assert all(r.won for r in claimed.values())
    finished = now + timedelta(milliseconds=5)
    assert await store.complete(retrying.id, "w1", _retry_after(finished, 1))

    await store.mark_published([fresh.id, pushing.id, retrying.id], now + timedelta(seconds=0.2))

    got = {n.id: await store.get(n.id) for n in (fresh, pushing, retrying)}
    published = {id: n.published_at for id, n in got.items() if n is not None}
    assert published == {
        fresh.id: now + timedelta(seconds=0.2),
        pushing.id: None,
        retrying.id: None,
    }
    # so the retry is taken the moment it is due, whatever the lost-wake-up bound
    due = finished + timedelta(seconds=1)
    assert await store.take_due_for_publish(
        due, limit=10, unpublished_grace_seconds=GRACE, stale_published_seconds=86400
    ) == [retrying.wake]


async def test_due_take_ignores_a_publish_from_before_the_document_fell_due(
    store: NotificationStore, now: datetime
) -> None:
    """A wake-up published before ``next_attempt_at`` / ``scheduled_for`` cannot deliver the
    document (its claim misses as not due): once due, the document is taken on its own,
    however long lost wake-ups are given (documents left so by an older API are healed)."""
    early = now - timedelta(seconds=5)
    due_at = now - timedelta(seconds=1)
    retrying, scheduled, waiting, republished = await insert(
        store,
        make_notification(
            early, status=Status.RETRYING, next_attempt_at=due_at, attempts=1, published_at=early
        ),
        make_notification(early, status=Status.SCHEDULED, scheduled_for=due_at, published_at=early),
        make_notification(
            early,
            status=Status.RETRYING,
            attempts=1,
            next_attempt_at=now + timedelta(seconds=30),
            published_at=early,
        ),
        # published once it was due: its wake-up is in the queue, not lost
        make_notification(
            early, status=Status.RETRYING, next_attempt_at=due_at, attempts=1, published_at=due_at
        ),
    )
    taken = await store.take_due_for_publish(
        now, limit=10, unpublished_grace_seconds=GRACE, stale_published_seconds=86400
    )
    assert len(taken) == 2 and set(taken) == {retrying.wake, scheduled.wake}
    assert {waiting.wake, republished.wake}.isdisjoint(taken)
    for wake in taken:
        doc = await store.get(wake.id)
        assert doc is not None and doc.published_at == now
    assert (
        await store.take_due_for_publish(
            now + timedelta(seconds=1),
            limit=10,
            unpublished_grace_seconds=GRACE,
            stale_published_seconds=86400,
        )
        == []
    )
