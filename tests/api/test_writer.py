"""The API writer's rounds: one insert at a time, the requests that queue meanwhile forming
the next round (up to 1,000 notifications but for its first request), each request answered
with its own results once its round is stored and published."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from typing import Any, cast

from api.writer import BrokerLink, Writer
from notifier.broker import Broker, delete_queues
from notifier.models import Lane, Notification, Platform, Target, new_id, utcnow
from notifier.settings import Settings
from notifier.store import InsertResult, NotificationStore
from tests.support import wait_for


class GatedInserts:
    """The real store; each ``insert_many`` is recorded, then waits for ``gate`` (only those
    of the lanes in ``gated``)."""

    def __init__(self, store: NotificationStore, gated: frozenset[Lane] = frozenset(Lane)) -> None:
        self.store = store
        self.inserts: list[int] = []
        self.apps: list[set[str]] = []  # the apps of each insert's notifications
        self.gate = asyncio.Event()
        self.gated = gated

    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        self.inserts.append(len(notifications))
        self.apps.append({n.app for n in notifications})
        if any(n.lane in self.gated for n in notifications):
            await self.gate.wait()
        return await self.store.insert_many(notifications)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def docs(n: int, lane: Lane = Lane.TRANSACTIONAL, app: str = "app-writer") -> list[Notification]:
    now = utcnow()
    return [
        Notification(
            id=new_id(),
            app=app,
            target=Target(Platform.FCM, f"tok-{secrets.token_hex(6)}"),
            created_at=now,
            updated_at=now,
            title="hi",
            lane=lane,
        )
        for _ in range(n)
    ]


async def test_one_insert_at_a_time_and_the_queue_forms_the_next_rounds(
    make_settings: Callable[..., Settings], store: NotificationStore
) -> None:
    settings = make_settings()
    gated = GatedInserts(store)
    link = BrokerLink(settings, await Broker.connect(settings))
    writer = Writer(cast(NotificationStore, gated), link)
    try:
        requests = [docs(1)]
        first = asyncio.ensure_future(writer.write(requests[0]))
        await wait_for(lambda: gated.inserts == [1], timeout=5, what="the first round")
        requests += [docs(2) for _ in range(5)] + [docs(400) for _ in range(3)]
        later = [asyncio.ensure_future(writer.write(r)) for r in requests[1:]]
        await asyncio.sleep(0.05)  # 1,210 queued, yet no second insert while one is held
        assert gated.inserts == [1]
        gated.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *later), 60)
        # the queue in order, rounds closed before they pass 1,000: 10 + 400 + 400, then 400
        assert gated.inserts == [1, 810, 400]
        for request, results in zip(requests, answers, strict=True):
            assert [r.notification.id for r in results] == [d.id for d in request]
            assert all(r.created for r in results)
        assert await store.get(requests[-1][-1].id) is not None
    finally:
        gated.gate.set()
        await writer.close()
        await link.close()


async def test_a_transactional_write_does_not_wait_behind_bulk_rounds(
    make_settings: Callable[..., Settings], store: NotificationStore
) -> None:
    """A campaign's batches hold the bulk rounds (one inserting, more queued); a login code
    written meanwhile is stored and published without waiting for any of them."""
    settings = make_settings()
    gated = GatedInserts(store, gated=frozenset({Lane.BULK}))
    link = BrokerLink(settings, await Broker.connect(settings))
    writer = Writer(cast(NotificationStore, gated), link)
    try:
        campaign = [asyncio.ensure_future(writer.write(docs(500, Lane.BULK))) for _ in range(3)]
        await wait_for(lambda: gated.inserts == [1000], timeout=5, what="the first bulk round")
        code = docs(1)
        [result] = await asyncio.wait_for(writer.write(code), 10)
        assert result.created and gated.inserts == [1000, 1]  # the bulk round still held
        assert not any(task.done() for task in campaign)
        gated.gate.set()
        answers = await asyncio.wait_for(asyncio.gather(*campaign), 60)
        assert all(r.created for results in answers for r in results)
    finally:
        gated.gate.set()
        await writer.close()
        await link.close()
        await delete_queues(settings, ["app-writer"])


async def test_a_second_apps_batch_is_not_written_behind_a_campaigns_queued_batches(
    make_settings: Callable[..., Settings], store: NotificationStore
) -> None:
    """App A has two 500-item batches queued in the bulk rounds (a third inserting) when app
    B's one batch arrives: B's goes into the next round, beside A's next batch, not after
    all of A's (in arrival order it was written last)."""
    settings = make_settings()
    gated = GatedInserts(store, gated=frozenset({Lane.BULK}))
    link = BrokerLink(settings, await Broker.connect(settings))
    writer = Writer(cast(NotificationStore, gated), link)

    def write(batch: list[Notification]) -> asyncio.Future[list[InsertResult]]:
        return asyncio.ensure_future(writer.write(batch))

    try:
        a = [write(docs(500, Lane.BULK, "app-a"))]
        await wait_for(lambda: gated.inserts == [500], timeout=30, what="A's first round")
        a += [write(docs(500, Lane.BULK, "app-a")) for _ in range(2)]
        await asyncio.sleep(0)  # A's two reach the writer's queue first
        b_batch = docs(500, Lane.BULK, "app-b")
        b = write(b_batch)
        await asyncio.sleep(0.05)
        assert gated.inserts == [500]  # all of it queued behind the held round
        gated.gate.set()
        b_results = await asyncio.wait_for(b, 60)
        await asyncio.wait_for(asyncio.gather(*a), 60)
        # rounds of at most 1,000: A's held one; then A's next beside B's; then A's last
        assert gated.inserts == [500, 1000, 500]
        # B's is written in the round after the held one, beside A's next (in arrival order
        # that round held A's two and B's came last). When each request is answered also
        # depends on its queue's first declaration, so the rounds' contents are asserted.
        assert gated.apps == [{"app-a"}, {"app-a", "app-b"}, {"app-a"}], gated.apps
        assert [r.notification.id for r in b_results] == [d.id for d in b_batch]
        assert all(r.created for r in b_results)
    finally:
        gated.gate.set()
        await writer.close()
        await link.close()
        await delete_queues(settings, ["app-a", "app-b"])
