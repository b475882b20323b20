"""The broker's lanes against a real RabbitMQ: each notification goes to its lane's queue
(bulk: its app's), and a publish no queue takes fails instead of vanishing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest

from notifier.broker import (
    Broker,
    BrokerUnavailable,
    announced_queues,
    decode,
    decode_announcement,
    existing_queue,
    queue_for,
)
from notifier.models import Lane, Wake, new_id
from notifier.settings import Settings

pytestmark = pytest.mark.stores("postgresql")  # the broker alone: one store is enough


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    b = await Broker.connect(settings)
    yield b
    await b.close()


async def drain(settings: Settings, name: str) -> list[str]:
    """Every id waiting in the queue ``name`` (consumed and acked)."""
    ids: list[str] = []
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection, existing_queue(connection, name) as queue:
        while (message := await queue.get(fail=False)) is not None:
            ids += decode(message.body) or []
            await message.ack()
    return ids


async def test_each_notification_goes_to_its_lanes_queue(
    settings: Settings, broker: Broker
) -> None:
    odd_app = "Acme Corp/ü"  # not fit for a queue name: named by a digest instead
    wakes = [
        Wake(new_id(), "a", Lane.TRANSACTIONAL),
        Wake(new_id(), "a", Lane.BULK),
        Wake(new_id(), "b", Lane.BULK),
        Wake(new_id(), odd_app, Lane.BULK),
        Wake(new_id(), "b", Lane.TRANSACTIONAL),
        Wake(new_id(), "a", Lane.BULK),
    ]
    await broker.publish_wakes(wakes)

    odd_queue = queue_for(settings, Lane.BULK, odd_app)
    assert odd_queue.startswith(f"{settings.queue}.bulk.sha256:") and "/" not in odd_queue
    assert await drain(settings, settings.queue) == [wakes[0].id, wakes[4].id]
    assert await drain(settings, f"{settings.queue}.bulk.a") == [wakes[1].id, wakes[5].id]
    assert await drain(settings, f"{settings.queue}.bulk.b") == [wakes[2].id]
    assert await drain(settings, odd_queue) == [wakes[3].id]
    assert broker.declared_queues == {
        settings.queue,
        f"{settings.queue}.bulk.a",
        f"{settings.queue}.bulk.b",
        odd_queue,
    }


async def test_a_publish_to_a_deleted_queue_fails_and_the_next_one_declares_it_again(
    settings: Settings, broker: Broker
) -> None:
    """A bulk queue removed behind the broker's back (an operator, a test clean-up): the
    publish is refused, not confirmed into nowhere, so the caller leaves the document
    unpublished for the sweeper; the next publish declares the queue again."""
    first, lost, again = new_id(), new_id(), new_id()
    await broker.publish([first], lane=Lane.BULK, app="a")
    name = queue_for(settings, Lane.BULK, "a")
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)

    with pytest.raises(BrokerUnavailable):
        await broker.publish([lost], lane=Lane.BULK, app="a")
    await broker.publish([again], lane=Lane.BULK, app="a")
    assert await drain(settings, name) == [again]


async def test_a_new_bulk_queue_is_announced_to_the_workers_once(
    settings: Settings, broker: Broker, make_settings: Callable[..., Settings]
) -> None:
    """Workers hear of a new app's bulk queue at once, not at their next store poll; a
    deployment sharing the vhost (another queue name) is not theirs."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        heard = await announced_queues(channel)
        await broker.publish([new_id()], lane=Lane.BULK, app="new-app")
        await broker.publish([new_id()], lane=Lane.BULK, app="new-app")  # declared already
        await broker.publish([new_id()])  # transactional: nothing to announce
        await broker.publish([new_id()], lane=Lane.BULK, app="marker")  # in order after those
        bodies: list[bytes] = []
        async with asyncio.timeout(10):
            while decode_announcement(bodies[-1] if bodies else b"", settings) != "marker":
                message = await heard.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                bodies.append(message.body)
                await message.ack()
    assert [decode_announcement(body, settings) for body in bodies] == ["new-app", "marker"]
    other = make_settings(queue="another-deployment")
    assert decode_announcement(bodies[0], settings) == "new-app"
    assert decode_announcement(bodies[0], other) is None
    assert decode_announcement(b"garbage", settings) is None
