"""The sweeper against the real store and broker: due retries whatever the queue depth, and
lost wake-ups found during a backlog by how far the queue has got (notifier/sweeper.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from structlog.testing import capture_logs

from notifier import sweeper as sweeper_module
from notifier.broker import Broker, decode, existing_queue
from notifier.models import Lane, Notification, Platform, Status, Target, new_id, utcnow
from notifier.retrying import Backoff
from notifier.settings import Settings
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from notifier.sweeper import PublishFailed, QueueHead, Sweeper


@pytest.fixture
def store_url(fresh_store_url: str) -> str:
    """A database of this test's own: the sweeper takes whatever is due in it."""
    return fresh_store_url


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # a lost wake-up is one left unclaimed max(60 s, 2 x lock) after the queue passed it
    return make_settings(lock_seconds=30)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[NotificationStore]:
    s = await open_store(settings)
    await s.setup()
    yield s
    await s.close()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    b = await Broker.connect(settings)
    yield b
    await b.close()


def note(created: datetime, **fields: object) -> Notification:
    values: dict[str, object] = {
        "id": new_id(),
        "app": "a",
        "target": Target(Platform.FCM, "fcm-token"),
        "created_at": created,
        "updated_at": created,
        "title": "Hi",
        "status": Status.PENDING,
    }
    values.update(fields)
    return Notification(**values)  # type: ignore[arg-type]


async def queued_ids(settings: Settings, name: str | None = None) -> list[str]:
    """Every id waiting in the work queue, or the queue ``name`` (consumed and acked: the
    test's own queue)."""
    ids: list[str] = []
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, existing_queue(connection, name or settings.queue) as queue:
        while (message := await queue.get(fail=False)) is not None:
            ids += decode(message.body) or []
            await message.ack()
    return ids


async def backlog(sweeper: Sweeper, broker: Broker, messages: int) -> None:
    """Messages waiting in the work queue, that nobody consumes; the sweeper knows it."""
    await broker.publish([new_id() for _ in range(messages)], per_message=1)
    await sweeper.refresh_gauges()
    assert sweeper.queue_depths[sweeper.settings.queue] >= messages


async def test_a_due_retry_is_published_whatever_the_queue_depth(
    settings: Settings, store: NotificationStore, broker: Broker
) -> None:
    """Attempt 1 ended as retrying before the API's late mark: published_at is older than
    next_attempt_at. Once due it goes out in the next round, deep queue or not."""
    now = utcnow()
    finished = now - timedelta(seconds=1)
    [retry] = [
        r.notification
        for r in await store.insert_many(
            [
                note(
                    now - timedelta(seconds=2),
                    status=Status.RETRYING,
                    attempts=1,
                    next_attempt_at=finished + timedelta(seconds=1),
                    published_at=finished + timedelta(milliseconds=200),
                )
            ]
        )
    ]
    sweeper = Sweeper(settings, store, broker)  # and this worker has received nothing yet
    await backlog(sweeper, broker, 500)

    assert await sweeper.sweep_once() == 1
    assert retry.id in await queued_ids(settings)
    doc = await store.get(retry.id)
    assert doc is not None and doc.published_at is not None and doc.published_at >= now


async def test_lost_wake_ups_during_a_backlog_are_found_by_how_far_the_queue_has_got(
    settings: Settings, store: NotificationStore, broker: Broker
) -> None:
    """The queue is 100 s behind (the newest message this worker received was published
    100 s ago). A wake-up published 200 s ago is lost (the queue passed it 100 s ago, more
    than the 60 s margin); one published 150 s ago may still be waiting: it is left alone."""
    now = utcnow()
    created = now - timedelta(seconds=300)
    lost, waiting = (
        r.notification
        for r in await store.insert_many(
            [
                note(created, published_at=now - timedelta(seconds=200)),
                note(created, published_at=now - timedelta(seconds=150)),
            ]
        )
    )
    head = QueueHead(consumed=[settings.queue])
    sweeper = Sweeper(settings, store, broker, head)
    await backlog(sweeper, broker, 50)

    assert await sweeper.sweep_once() == 0  # nothing received yet: nothing known to be lost
    head.seen(settings.queue, now - timedelta(seconds=100))
    # a redelivery: its old stamp does not count
    head.seen(settings.queue, now - timedelta(seconds=250))
    assert await sweeper.sweep_once() == 1
    assert lost.id in await queued_ids(settings)
    assert await sweeper.sweep_once() == 0  # republished: not lost again until passed again
    # the queue drained: everything published more than 60 s ago and unclaimed is lost
    await sweeper.refresh_gauges()
    assert sweeper.queue_depths[settings.queue] == 0
    assert await sweeper.sweep_once() == 1
    assert await queued_ids(settings) == [waiting.id]


async def test_every_publish_is_stamped_and_moves_the_queue_head(
    settings: Settings, broker: Broker
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    await broker.publish([new_id()])
    after = datetime.now(UTC)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, existing_queue(connection, settings.queue) as queue:
        message = await queue.get(timeout=5)
        head = QueueHead()
        head.seen(settings.queue, message.timestamp)
        await message.ack()
    newest = head.newest.get(settings.queue)
    assert newest is not None and before <= newest <= after


async def test_a_refused_publish_ends_the_round_and_the_sweeper_retries_after_a_backoff(
    settings: Settings,
    store: NotificationStore,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker without a channel refuses the publish: the ids are unmarked, the round
    stops, and the sweeper runs it again after its backoff, publishing once the broker is
    back."""
    monkeypatch.setattr(sweeper_module, "PUBLISH_BACKOFF", Backoff(0.05, 0.1))
    old = utcnow() - timedelta(minutes=5)  # never published, well past the API's grace
    [lost] = [r.notification for r in await store.insert_many([note(old)])]
    down = Broker(settings, broker.connection)  # never declared: no channel to publish on
    sweeper = Sweeper(settings, store, down)

    with pytest.raises(PublishFailed):
        await sweeper.sweep_once()
    doc = await store.get(lost.id)
    assert doc is not None and doc.published_at is None  # unmarked for a later round

    with capture_logs() as logs:
        task = asyncio.create_task(sweeper.run())
        try:
            async with asyncio.timeout(30):
                while not any(e["event"] == "sweeper_paused" for e in logs):
                    await asyncio.sleep(0.01)
                sweeper.broker = broker  # the broker is back
                while (doc := await store.get(lost.id)) is None or doc.published_at is None:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    paused = next(e for e in logs if e["event"] == "sweeper_paused")
    assert paused["error"] == "PublishFailed" and 0.025 <= paused["retry_in"] <= 0.05
    assert not any(e["event"] == "sweep_failed" for e in logs)
    assert await queued_ids(settings) == [lost.id]


async def test_the_sweeper_republishes_into_each_notifications_lane(
    settings: Settings, store: NotificationStore, broker: Broker
) -> None:
    """Due retries, due scheduled notifications and never-published ones go back to their
    own lane's queue: the transactional queue, or their app's bulk queue."""
    now = utcnow()
    old = now - timedelta(minutes=5)
    docs = [
        note(old, status=Status.RETRYING, attempts=1, next_attempt_at=now, app="a"),
        note(old, status=Status.RETRYING, attempts=1, next_attempt_at=now, lane=Lane.BULK),
        note(old, status=Status.SCHEDULED, scheduled_for=now, app="b", lane=Lane.BULK),
        note(old, app="b", lane=Lane.BULK),  # never published, past the API's grace
    ]
    await store.insert_many(docs)
    sweeper = Sweeper(settings, store, broker, QueueHead(consumed=[settings.queue]))

    assert await sweeper.sweep_once() == 4
    assert await queued_ids(settings) == [docs[0].id]
    assert await queued_ids(settings, f"{settings.queue}.bulk.a") == [docs[1].id]
    assert sorted(await queued_ids(settings, f"{settings.queue}.bulk.b")) == sorted(
        [docs[2].id, docs[3].id]
    )


async def test_a_worker_of_one_lane_leaves_lost_wake_ups_to_the_others(
    settings: Settings, store: NotificationStore, broker: Broker
) -> None:
    """It cannot see how far the other lane's queues have got: a wake-up published long ago
    may be waiting there still. A worker of both lanes, its queues empty, takes it."""
    now = utcnow()
    [stale] = [
        r.notification
        for r in await store.insert_many(
            [note(now - timedelta(minutes=10), published_at=now - timedelta(minutes=5))]
        )
    ]
    head = QueueHead(consumed=[settings.queue])
    head.all_lanes = False
    one_lane = Sweeper(settings, store, broker, head)
    await one_lane.refresh_gauges()
    assert await one_lane.sweep_once() == 0

    both = Sweeper(settings, store, broker, QueueHead(consumed=[settings.queue]))
    await both.refresh_gauges()
    assert await both.sweep_once() == 1
    assert await queued_ids(settings) == [stale.id]
