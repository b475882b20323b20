"""Deliveries against the real store (through the batched store the worker uses) and broker,
with a provider double at the provider interface (the emulator-backed runs are in
tests/workers/test_worker_processes.py; the decisions alone in test_decisions.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import aio_pika
import orjson
import pytest

from notifier.broker import Broker, existing_queue
from notifier.delivery import Deliverer, DeliveryResult
from notifier.models import Notification, Platform, Status, utcnow
from notifier.providers.base import PushOutcome, PushResult
from notifier.retry import backoff_seconds
from notifier.settings import Settings
from notifier.store.base import NotificationStore
from notifier.store.batching import BatchedStore
from tests.workers.conftest import insert_and_publish, make_notification


class ScriptedProvider:
    """Answers each send with the next scripted result (then SENT); counts calls."""

    def __init__(self, platform: Platform, *answers: PushResult) -> None:
        self.platform = platform
        self.answers = list(answers)
        self.calls: list[str] = []

    async def send(self, notification: Notification) -> PushResult:
        self.calls.append(notification.id)
        if self.answers:
            return self.answers.pop(0)
        return PushResult(PushOutcome.SENT, 200, message_id="m-" + notification.id)

    async def close(self) -> None:
        return None


MakeDeliverer = Callable[[Settings, NotificationStore, Broker, ScriptedProvider], Deliverer]


@pytest.fixture
async def deliverer() -> AsyncIterator[MakeDeliverer]:
    """Builds a Deliverer as the worker does (on a BatchedStore); closes those at the end."""
    opened: list[BatchedStore] = []

    def make(
        settings: Settings, store: NotificationStore, broker: Broker, provider: ScriptedProvider
    ) -> Deliverer:
        batched = BatchedStore(store, "test-worker", settings.lock_seconds)
        opened.append(batched)
        return Deliverer(
            settings=settings,
            store=batched,
            providers={provider.platform: provider},
            dead_letters=broker,
            rng=random.Random(7),
        )

    yield make
    for batched in opened:
        await batched.close()


async def dead_letters(settings: Settings) -> list[dict[str, str]]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with existing_queue(connection, settings.dead_letter_queue) as queue:
            found = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                found.append(orjson.loads(message.body))
            return found
    finally:
        await connection.close()


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(3, base_seconds=10, max_seconds=25, rng=rng) for _ in range(500)]
    assert all(0 <= d <= 25 for d in delays)  # min(cap, 10 * 2**2) = 25
    assert min(delays) < 5 and max(delays) > 20  # spread over the whole range
    floored = backoff_seconds(1, base_seconds=1, max_seconds=2, retry_after_seconds=30, rng=rng)
    assert floored == 30


async def test_sent_records_outcome_and_history(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    settings = make_settings()
    provider = ScriptedProvider(Platform.FCM)
    (nid,) = await insert_and_publish(store, None, [make_notification()])
    d = deliverer(settings, store, broker, provider)
    assert await d.deliver(nid) is DeliveryResult.SENT
    stored = await store.get(nid)
    assert stored is not None and stored.status is Status.SENT
    assert stored.provider_message_id == "m-" + nid and stored.sent_at is not None
    assert [h.outcome for h in stored.history] == ["sent"]
    assert stored.history[0].worker == "test-worker" and stored.history[0].finished_at
    # a second message for the same id is a suppressed duplicate: no second push
    assert await d.deliver(nid) is DeliveryResult.DUPLICATE
    assert provider.calls == [nid]
    assert d.stats.sent == 1 and d.stats.duplicates_suppressed == 1


async def test_retry_is_scheduled_never_before_retry_after(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    settings = make_settings(retry_base_seconds=0.1, retry_max_seconds=0.2)
    busy = PushResult(PushOutcome.RETRY, 429, retry_after_seconds=30, code="QUOTA_EXCEEDED")
    provider = ScriptedProvider(Platform.FCM, busy)
    (nid,) = await insert_and_publish(store, None, [make_notification()])
    d = deliverer(settings, store, broker, provider)
    before = utcnow()
    assert await d.deliver(nid) is DeliveryResult.RETRYING
    stored = await store.get(nid)
    assert stored is not None and stored.status is Status.RETRYING
    assert stored.next_attempt_at is not None
    assert stored.next_attempt_at >= before + timedelta(seconds=30)
    assert stored.last_error is not None and stored.last_error.code == "QUOTA_EXCEEDED"
    assert [h.outcome for h in stored.history] == ["retry"]
    # not due yet: a stray message is dropped and the provider is not called again
    assert await d.deliver(nid) is DeliveryResult.DUPLICATE
    assert provider.calls == [nid]


async def test_exhausted_retries_fail_and_dead_letter(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    settings = make_settings(max_attempts=1)
    provider = ScriptedProvider(
        Platform.FCM, PushResult(PushOutcome.RETRY, 503, code="UNAVAILABLE")
    )
    (nid,) = await insert_and_publish(store, None, [make_notification()])
    assert await deliverer(settings, store, broker, provider).deliver(nid) is DeliveryResult.FAILED
    stored = await store.get(nid)
    assert stored is not None and stored.status is Status.FAILED
    assert stored.last_error is not None and stored.last_error.code == "UNAVAILABLE"
    assert {"id": nid, "reason": "max_attempts"} in await dead_letters(settings)


async def test_dead_token_fails_at_once_and_deactivates_the_device(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    settings = make_settings()
    note = make_notification(Platform.APNS)
    await store.upsert_device("app1", note.target.token, Platform.APNS, "u1", utcnow())
    dead = PushResult(PushOutcome.TOKEN_DEAD, 410, code="Unregistered")
    provider = ScriptedProvider(Platform.APNS, dead)
    await insert_and_publish(store, None, [note])
    assert await deliverer(settings, store, broker, provider).deliver(note.id) is (
        DeliveryResult.FAILED
    )
    device = await store.get_device("app1", note.target.token)
    assert device is not None and not device.active
    stored = await store.get(note.id)
    assert stored is not None and stored.status is Status.FAILED and stored.next_attempt_at is None


async def test_ttl_passed_expires_without_a_push(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    provider = ScriptedProvider(Platform.FCM)
    old = make_notification(ttl_seconds=5, created_at=utcnow() - timedelta(seconds=60))
    await insert_and_publish(store, None, [old])
    d = deliverer(make_settings(), store, broker, provider)
    assert await d.deliver(old.id) is DeliveryResult.EXPIRED
    assert provider.calls == []


class HangingProvider(ScriptedProvider):
    """A client whose call never returns, whatever its own timeouts were meant to do."""

    async def send(self, notification: Notification) -> PushResult:
        self.calls.append(notification.id)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_provider_call_that_never_returns_becomes_a_retry(
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    # the outer bound is twice the provider timeout plus 5 s, checked once a second
    settings = make_settings(provider_timeout_seconds=0.1)
    note = make_notification(Platform.FCM)
    await insert_and_publish(store, None, [note])
    provider = HangingProvider(Platform.FCM)
    d = deliverer(settings, store, broker, provider)
    assert await asyncio.wait_for(d.deliver(note.id), 30) is DeliveryResult.RETRYING
    stored = await store.get(note.id)
    assert stored is not None and stored.status is Status.RETRYING
    assert stored.last_error is not None and stored.last_error.code == "timeout"
    assert provider.calls == [note.id]


@pytest.mark.parametrize("platform", [Platform.APNS])
async def test_unconfigured_platform_is_a_clear_permanent_failure(
    platform: Platform,
    make_settings: Callable[..., Settings],
    store: NotificationStore,
    broker: Broker,
    deliverer: MakeDeliverer,
) -> None:
    settings = make_settings()
    note = make_notification(platform)
    await insert_and_publish(store, None, [note])
    d = deliverer(settings, store, broker, ScriptedProvider(Platform.FCM))
    assert await d.deliver(note.id) is DeliveryResult.FAILED
    stored = await store.get(note.id)
    assert stored is not None and stored.last_error is not None
    assert stored.last_error.code == "provider_not_configured"
    assert {"id": note.id, "reason": "permanent:provider_not_configured"} in await dead_letters(
        settings
    )
