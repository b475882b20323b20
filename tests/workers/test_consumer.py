"""The consumer (workers/consumer.py) while the store is down: a message is held and its
delivery retried, and a shutdown ends that wait at once, leaving the message to the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest
from structlog.testing import capture_logs

from notifier.broker import Broker
from notifier.delivery import Deliverer
from notifier.models import new_id
from notifier.retrying import Backoff
from notifier.settings import Settings
from notifier.store.batching import BatchedStore
from notifier.store.factory import open_store
from workers import consumer as consumer_module
from workers.consumer import Consumer


@pytest.mark.stores("postgresql")  # the store is made unavailable by closing its asyncpg pool
# (the shared server keeps running); the hold itself knows nothing of the store's kind
async def test_stop_ends_a_store_outage_hold_at_once_and_the_message_comes_back(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 25 s between attempts (within the 30 s hold): only the stop event ends the wait in time
    monkeypatch.setattr(consumer_module, "STORE_RETRY_BACKOFF", Backoff(25, 25))
    settings = make_settings()
    store = await open_store(settings)
    await store.close()  # every call now raises StoreUnavailable
    broker = await Broker.connect(settings)
    batched = BatchedStore(store, "w", settings.lock_seconds)
    try:
        deliverer = Deliverer(settings=settings, store=batched, providers={}, dead_letters=broker)
        consumer = Consumer(settings, broker.connection, deliverer, concurrency=4)
        notification_id = new_id()
        await broker.publish([notification_id])
        with capture_logs() as logs:
            await consumer.start()
            async with asyncio.timeout(30):
                while not any(e["event"] == "store_unavailable_retry" for e in logs):
                    await asyncio.sleep(0.01)
            assert consumer.messages == 1  # held, neither acked nor requeued
            drained = await consumer.stop(timeout=5)
            await consumer.close()
        assert drained  # the 25 s wait ended when stop() was called
        held = [e for e in logs if e["event"] == "store_unavailable_retry"]
        assert held[0]["error"] == "StoreUnavailable" and held[0]["retry_in"] == 25
        assert any(e["event"] == "store_unavailable_requeue" for e in logs)
        assert await _queued(settings) == [notification_id]  # nacked: back in the queue
    finally:
        await batched.close()
        await broker.close()


async def _queued(settings: Settings) -> list[str]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.queue, ensure=False)
        ids: list[str] = []
        async with asyncio.timeout(10):
            while not ids:  # the nack reaches the queue shortly after the channel acts on it
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                ids.append(message.message_id or "")
                await message.ack()
        return ids
