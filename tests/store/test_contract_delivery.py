"""Store contract, worker side: claim, lock expiry, complete with fencing, complete_many."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from notifier.models import AttemptOutcome, LastError, Status
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import ClaimMiss, NotificationStore, Outcome
from tests.store.conftest import ConnectStore, insert, make_notification

LOCK = 30.0


def sent(at: datetime) -> Outcome:
    return Outcome(
        status=Status.SENT,
        attempt_outcome=AttemptOutcome.SENT,
        finished_at=at,
        provider_status=200,
        provider_message_id="projects/p/messages/1",
    )


async def test_claim_locks_a_due_notification(store: NotificationStore, now: datetime) -> None:
    [n] = await insert(store, make_notification(now))
    result = await store.claim(n.id, "w1", now, LOCK)
    assert result.won and result.miss is None
    doc = result.notification
    assert doc is not None
    assert (doc.locked_by, doc.locked_at) == ("w1", now)
    assert doc.lock_expiry == now + timedelta(seconds=LOCK)
    assert doc.attempts == 1
    assert [(a.worker, a.started_at, a.finished_at) for a in doc.history] == [("w1", now, None)]
    assert await store.get(n.id) == doc


async def test_claim_misses_are_classified(store: NotificationStore, now: datetime) -> None:
    later = now + timedelta(minutes=5)
    retry_later, scheduled_later, sent_doc, failed_doc, locked = await insert(
        store,
        make_notification(now, status=Status.RETRYING, next_attempt_at=later),
        make_notification(now, status=Status.SCHEDULED, scheduled_for=later),
        make_notification(now, status=Status.SENT),
        make_notification(now, status=Status.FAILED),
        make_notification(now),
    )
    assert (await store.claim(locked.id, "w1", now, LOCK)).won
    expected = {
        retry_later.id: ClaimMiss.NOT_DUE,
        scheduled_later.id: ClaimMiss.NOT_DUE,
        sent_doc.id: ClaimMiss.FINAL,
        failed_doc.id: ClaimMiss.FINAL,
        locked.id: ClaimMiss.LOCKED,
        "01900000-0000-7000-8000-000000000000": ClaimMiss.MISSING,
    }
    for id, miss in expected.items():
        result = await store.claim(id, "w2", now + timedelta(seconds=1), LOCK)
        assert not result.won and result.notification is None
        assert result.miss is miss, id
    # at its time, a scheduled or retrying notification is claimable
    assert (await store.claim(retry_later.id, "w2", later, LOCK)).won
    assert (await store.claim(scheduled_later.id, "w2", later, LOCK)).won


async def test_expired_lock_is_reclaimable(store: NotificationStore, now: datetime) -> None:
    [n] = await insert(store, make_notification(now))
    assert (await store.claim(n.id, "w1", now, LOCK)).won
    assert not (await store.claim(n.id, "w2", now + timedelta(seconds=LOCK - 1), LOCK)).won
    result = await store.claim(n.id, "w2", now + timedelta(seconds=LOCK + 1), LOCK)
    assert result.notification is not None
    assert result.notification.locked_by == "w2"
    assert result.notification.attempts == 2
    first, second = result.notification.history
    assert (first.worker, second.worker) == ("w1", "w2")
    # w1 died mid-push: its attempt is closed as unknown (the push may have landed)
    assert first.outcome is AttemptOutcome.UNKNOWN
    assert second.outcome is None


async def test_concurrent_claimers_claim_each_document_exactly_once(
    connect_store: ConnectStore,
    store: NotificationStore,
    now: datetime,
    sized: Callable[[int], int],
) -> None:
    ids = [n.id for n in await insert(store, *(make_notification(now) for _ in range(sized(2000))))]
    claimers = [await connect_store() for _ in range(8)]
    # Each document is contested by 3 claimers picked at random; all claimers walk the same
    # order, so contenders reach a document at about the same moment.
    rng = random.Random(2000)
    contenders = {id: set(rng.sample(range(len(claimers)), 3)) for id in ids}

    async def claim_all(worker: int, claimer: NotificationStore) -> list[str]:
        mine = [id for id in ids if worker in contenders[id]]
        return [id for id in mine if (await claimer.claim(id, f"w{worker}", now, LOCK)).won]

    wins = await asyncio.gather(*(claim_all(i, s) for i, s in enumerate(claimers)))
    counts = Counter(id for won in wins for id in won)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    # Every claimer won some: they really did compete. The stand-in (sized down) serves one
    # command at a time, so a claimer can arrive last at every one of its documents; there the
    # exactly-once assertions above are the whole test.
    assert all(wins) or sized(2000) < 2000


async def test_complete_writes_outcome_and_releases_lock(
    store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now))
    await store.claim(n.id, "w1", now, LOCK)
    done = now + timedelta(milliseconds=250)
    assert await store.complete(n.id, "w1", sent(done))
    doc = await store.get(n.id)
    assert doc is not None
    assert doc.status is Status.SENT
    assert (doc.sent_at, doc.provider_message_id) == (done, "projects/p/messages/1")
    assert (doc.locked_by, doc.lock_expiry) == (None, None)
    [attempt] = doc.history
    assert (attempt.finished_at, attempt.outcome, attempt.provider_status) == (
        done,
        AttemptOutcome.SENT,
        200,
    )
    # the same write again (a retry after a lost answer): stored already, nothing changes
    assert await store.complete(n.id, "w1", sent(done))
    assert await store.get(n.id) == doc
    # another outcome: the lock is gone, it is refused
    assert not await store.complete(n.id, "w1", sent(done + timedelta(seconds=1)))


async def test_complete_is_fenced_on_the_lock_holder(
    store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now))
    await store.claim(n.id, "w1", now, LOCK)
    # w1 stalls past its lock; w2 re-claims
    late = now + timedelta(seconds=LOCK + 1)
    assert (await store.claim(n.id, "w2", late, LOCK)).won
    assert not await store.complete(n.id, "w1", sent(late))
    doc = await store.get(n.id)
    assert doc is not None and doc.status is Status.PENDING and doc.locked_by == "w2"
    assert await store.complete(n.id, "w2", sent(late + timedelta(seconds=1)))
    doc = await store.get(n.id)
    assert doc is not None and doc.status is Status.SENT


async def test_complete_many_reports_each_item(store: NotificationStore, now: datetime) -> None:
    a, b, c = await insert(store, *(make_notification(now) for _ in range(3)))
    for doc in (a, b):
        await store.claim(doc.id, "w1", now, LOCK)
    await store.claim(c.id, "w2", now, LOCK)
    failure = Outcome(
        status=Status.FAILED,
        attempt_outcome=AttemptOutcome.TOKEN_DEAD,
        finished_at=now,
        provider_status=410,
        last_error=LastError("Unregistered", "the token is dead", 410),
    )
    results = await store.complete_many(
        "w1", [(a.id, sent(now)), (b.id, failure), (c.id, sent(now))]
    )
    assert results == [True, True, False]
    got_a, got_b, got_c = [await store.get(x.id) for x in (a, b, c)]
    assert got_a is not None and got_a.status is Status.SENT
    assert got_b is not None and got_b.status is Status.FAILED
    assert got_b.last_error == LastError("Unregistered", "the token is dead", 410)
    assert got_b.history[-1].outcome is AttemptOutcome.TOKEN_DEAD
    assert got_c is not None and got_c.status is Status.PENDING and got_c.locked_by == "w2"
    assert await store.complete_many("w1", []) == []


async def test_complete_many_retried_after_it_landed_reports_it_written(
    store: NotificationStore, now: datetime
) -> None:
    """A batch written twice (retried after a timeout that hid its success): the second
    changes nothing, and says the outcomes are stored, so the worker acks and goes on with
    the side effects (a dead token's deactivation, say) instead of taking a lost lock."""
    a, b = await insert(store, make_notification(now), make_notification(now))
    await store.claim_many([a.id, b.id], "w1", now, LOCK)
    items = [(a.id, sent(now)), (b.id, sent(now))]
    assert await store.complete_many("w1", items) == [True, True]
    before = [await store.get(a.id), await store.get(b.id)]
    assert await store.complete_many("w1", items) == [True, True]
    assert [await store.get(a.id), await store.get(b.id)] == before
    # not another worker's, not another outcome's, not one never claimed
    assert await store.complete_many("w2", items) == [False, False]
    later = now + timedelta(seconds=1)
    assert await store.complete_many("w1", [(a.id, sent(later))]) == [False]
    c, d = await insert(store, make_notification(now), make_notification(now))
    await store.claim(c.id, "w1", now, LOCK)
    again = [(d.id, sent(later)), (c.id, sent(later))]
    assert await store.complete_many("w1", again) == [False, True]


async def test_complete_after_the_lock_expired_and_was_recovered_is_lost(
    store: NotificationStore, now: datetime
) -> None:
    """The sweeper closed our attempt as unknown (our lock expired): our late write is
    refused and says so, though the outcome it carries ends when ours would have."""
    [n] = await insert(store, make_notification(now))
    await store.claim(n.id, "w1", now, LOCK)
    expired = now + timedelta(seconds=LOCK + 1)
    await store.recover_expired_locks(expired, limit=10, policy=UnknownOutcomePolicy.RESEND)
    assert await store.complete_many("w1", [(n.id, sent(now))]) == [False]
    stored = await store.get(n.id)
    assert stored is not None and stored.status is Status.PENDING


async def test_retrying_clears_published_at_and_waits_for_next_attempt(
    store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now))
    await store.mark_published([n.id], now)
    await store.claim(n.id, "w1", now, LOCK)
    next_at = now + timedelta(seconds=60)
    retry = Outcome(
        status=Status.RETRYING,
        attempt_outcome=AttemptOutcome.RETRY,
        finished_at=now,
        provider_status=503,
        next_attempt_at=next_at,
        last_error=LastError("UNAVAILABLE", "try later", 503),
    )
    assert await store.complete(n.id, "w1", retry)
    doc = await store.get(n.id)
    assert doc is not None
    assert (doc.status, doc.published_at, doc.next_attempt_at) == (Status.RETRYING, None, next_at)
    assert doc.last_error is not None and doc.last_error.code == "UNAVAILABLE"
    assert doc.locked_by is None
    miss = await store.claim(n.id, "w2", now + timedelta(seconds=1), LOCK)
    assert miss.miss is ClaimMiss.NOT_DUE
    result = await store.claim(n.id, "w2", next_at, LOCK)
    assert result.notification is not None and result.notification.attempts == 2
    assert [a.outcome for a in result.notification.history] == [AttemptOutcome.RETRY, None]


async def test_reopen_puts_a_failed_notification_back_in_line(
    store: NotificationStore, now: datetime
) -> None:
    failed, sent_doc, pending = await insert(store, *(make_notification(now) for _ in range(3)))
    permanent = Outcome(
        status=Status.FAILED,
        attempt_outcome=AttemptOutcome.PERMANENT,
        finished_at=now,
        last_error=LastError("INVALID", "bad payload", 400),
    )
    for doc, outcome in ((failed, permanent), (sent_doc, sent(now))):
        await store.claim(doc.id, "w1", now, LOCK)
        assert await store.complete(doc.id, "w1", outcome)
    later = now + timedelta(minutes=1)
    assert await store.reopen(failed.id, later)
    reopened = await store.get(failed.id)
    assert reopened is not None
    assert (reopened.status, reopened.published_at, reopened.locked_by) == (
        Status.PENDING,
        later,
        None,
    )
    assert reopened.attempts == 1 and len(reopened.history) == 1
    assert reopened.last_error is not None and reopened.last_error.code == "INVALID"
    assert (await store.claim(failed.id, "w2", later, LOCK)).won
    assert not await store.reopen(sent_doc.id, later)
    assert not await store.reopen(pending.id, later)
    assert not await store.reopen("01900000-0000-7000-8000-000000000000", later)
