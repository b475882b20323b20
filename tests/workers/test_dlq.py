"""``notifier dlq list|replay`` against the real broker and store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from notifier.broker import Broker
from notifier.delivery import Deliverer, DeliveryResult
from notifier.models import Platform, Status
from notifier.providers.base import PushOutcome, PushResult
from notifier.settings import Settings
from notifier.store.base import NotificationStore
from notifier.store.batching import BatchedStore
from tests.notifier.test_delivery import ScriptedProvider
from tests.workers.conftest import insert_and_publish, make_notification
from workers import dlq


async def _depths(broker: Broker) -> tuple[int, int]:
    depths = await broker.queue_depths()
    return depths[broker.settings.queue], depths[broker.settings.dead_letter_queue]


async def test_list_shows_reasons_without_consuming_and_replay_resends(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    bad = PushResult(PushOutcome.PERMANENT, 400, code="PayloadTooLarge", message="too big")
    note = make_notification(Platform.FCM)
    await insert_and_publish(store, None, [note])
    batched = BatchedStore(store, "test-worker", settings.lock_seconds)
    provider = ScriptedProvider(Platform.FCM, bad)
    d = Deliverer(
        settings=settings, store=batched, providers={Platform.FCM: provider}, dead_letters=broker
    )
    assert await d.deliver(note.id) is DeliveryResult.FAILED
    await broker.publish_body(b"garbage", dead=True)
    assert await _depths(broker) == (0, 2)

    assert await asyncio.to_thread(dlq.main, settings, ["list"]) == 0
    out = capsys.readouterr().out
    assert f"{note.id}\tpermanent:PayloadTooLarge\tfailed\tPayloadTooLarge: too big" in out
    assert "(unreadable)" in out
    assert await _depths(broker) == (0, 2)  # listing consumed nothing

    assert await asyncio.to_thread(dlq.main, settings, ["replay", "--limit", "10"]) == 0
    assert f"replayed\t{note.id}" in capsys.readouterr().out
    assert await _depths(broker) == (1, 1)  # republished; the garbage stays for a human
    stored = await store.get(note.id)
    assert stored is not None and stored.status is Status.PENDING
    assert stored.attempts == 1 and [h.outcome for h in stored.history] == ["permanent"]

    # the replayed notification is delivered normally (attempts go on counting)
    assert await d.deliver(note.id) is DeliveryResult.SENT
    stored = await store.get(note.id)
    assert stored is not None and stored.status is Status.SENT and stored.attempts == 2
    await batched.close()


async def test_bad_limit_is_a_usage_error(make_settings: Callable[..., Settings]) -> None:
    assert dlq.main(make_settings(), ["list", "--limit", "0"]) == 2
    with pytest.raises(SystemExit):
        dlq.main(make_settings(), ["frobnicate"])
