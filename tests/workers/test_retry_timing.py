"""A retry goes out on time: within its delay plus one sweep interval of attempt 1, on both
stores, with and without a queue of other work waiting (docs/workers.md, "Sweeper").

The API marks ids published once the broker confirmed, in the background and in bulk; a
worker that was faster has by then pushed the notification, got a 503 and stored it as
``retrying``. These tests play the API's part in that order (publish, attempt 1, then the
mark), which is the case that made every such retry wait 60 s, or a day with a backlog.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notifier.broker import Broker
from notifier.models import Notification, Platform, Status, utcnow
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import WorkerPool, WorkerProc, fcm_token, make_notification, wait_final

pytestmark = pytest.mark.slow

SWEEP_INTERVAL = 0.3  # NOTIFIER_SWEEP_INTERVAL_SECONDS of the worker fixtures
RETRY_AFTER = 1
BOUND = RETRY_AFTER + 2 * SWEEP_INTERVAL  # the bound: 1 + 2 x the sweep interval


async def attempt_one_then_late_mark(store: NotificationStore, note: Notification) -> Notification:
    """Wait until the worker stored attempt 1 as retrying, then mark the id published, as
    the API does once its confirm came back (200 ms after, in bulk)."""

    async def retrying() -> Notification | None:
        doc = await store.get(note.id)
        return doc if doc is not None and doc.status is Status.RETRYING else None

    doc = await wait_for(retrying, timeout=30, interval=0.02, what="attempt 1 as retrying")
    await store.mark_published([note.id], utcnow())
    assert doc.history[0].provider_status == 503 and doc.next_attempt_at is not None
    assert utcnow() < doc.next_attempt_at, "marked too late to matter: the test was too slow"
    return doc  # type: ignore[no-any-return]


async def retried(store: NotificationStore, note: Notification, timeout: float) -> Notification:
    [done] = (await wait_final(store, [note.id], timeout=timeout)).values()
    assert done.status is Status.SENT and [h.outcome for h in done.history] == ["retry", "sent"]
    return done


def seconds(a: Any, b: Any) -> float:
    return float((b - a).total_seconds())


async def test_a_retry_after_503_with_retry_after_1_goes_out_on_time(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    await workers.start(concurrency=8)
    token = fcm_token()
    await emulator.control.flaky(token, 1, retry_after=RETRY_AFTER)
    note = make_notification(Platform.FCM, token)
    await store.insert_many([note])
    await broker.publish([note.id])
    await attempt_one_then_late_mark(store, note)

    done = await retried(store, note, timeout=BOUND + 10)
    first, second = done.history
    assert first.finished_at is not None
    gap = seconds(first.finished_at, second.started_at)
    assert RETRY_AFTER <= gap <= BOUND, f"second push {gap:.2f} s after the first"


async def test_a_retry_is_republished_on_time_while_a_backlog_waits_in_the_queue(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    """60 messages wait in the queue behind the notification, 4 pushed at a time (300 ms
    each): the worker's sweeper sees the queue deep from its first round. The retry's
    wake-up joins the queue behind that work, like any message (first in, first out); what
    must not wait on the backlog is its republish."""
    token = fcm_token()
    await emulator.control.flaky(token, 1, retry_after=RETRY_AFTER)
    slow = [fcm_token() for _ in range(4)]
    for t in slow:
        await emulator.control.slow(t, 300)
    note = make_notification(Platform.FCM, token)
    queued = [make_notification(Platform.FCM, slow[i % 4]) for i in range(60)]
    await store.insert_many([note, *queued])
    await broker.publish([note.id])  # first in the queue: attempt 1 goes at once
    await broker.publish([n.id for n in queued], per_message=1)
    await store.mark_published([n.id for n in queued], utcnow())
    worker = await workers.start(concurrency=4)
    await attempt_one_then_late_mark(store, note)
    assert await queue_waiting(worker)  # the depth the sweeper goes by

    done = await retried(store, note, timeout=60)
    first, second = done.history
    assert first.finished_at is not None and done.published_at is not None
    republished = seconds(first.finished_at, done.published_at)
    assert RETRY_AFTER <= republished <= BOUND, f"republished {republished:.2f} s after"
    # the backlog was still waiting when the retry was republished
    later = [n for n in (await wait_final(store, [q.id for q in queued], timeout=60)).values()]
    assert max(n.history[0].started_at for n in later) > done.published_at + timedelta(
        milliseconds=1
    )
    assert second.started_at >= done.published_at


async def queue_waiting(worker: WorkerProc) -> bool:
    stats = await worker.stats()
    return any(depth > 0 for name, depth in stats["queue_depths"].items() if "dead" not in name)
