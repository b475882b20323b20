"""RabbitMQ: the durable work queue that carries wake-ups (notification ids), via aio-pika.

The queue is a durable quorum queue; messages are persistent and every publish waits for
the broker's confirm. A work message carries up to :data:`IDS_PER_MESSAGE` ids as
``{"ids": [...]}`` (the older one-id form ``{"id": ...}`` is still read). Dead letters
(exhausted retries, poison messages) go through the ``notifier.dlx`` exchange to
``<queue>.dead``, where ``notifier dlq`` reads and replays them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from notifier.settings import Settings

DLX_EXCHANGE = "notifier.dlx"
DELIVERY_LIMIT = 20  # a message redelivered this often is poison: dead-letter it
PUBLISH_TIMEOUT_SECONDS = 10.0
IDS_PER_MESSAGE = 50  # ids packed into one work message


class BrokerUnavailable(Exception):
    """The broker could not be reached, or did not confirm a publish."""


def encode(notification_id: str, **extra: Any) -> bytes:
    """A one-id body (dead letters carry their ``reason`` beside the id)."""
    return orjson.dumps({"id": notification_id, **extra})


def encode_ids(ids: Sequence[str]) -> bytes:
    """A work message body carrying several ids."""
    return orjson.dumps({"ids": list(ids)})


def decode(body: bytes) -> list[str] | None:
    """The notification ids a message body carries (distinct, in order), or None for garbage.

    Reads ``{"ids": [...]}`` (non-empty, every item a non-empty string) and ``{"id": ...}``.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    if "ids" in value:
        ids = value["ids"]
        if isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids):
            return list(dict.fromkeys(ids))
        return None
    nid = value.get("id")
    if isinstance(nid, str) and nid:
        return [nid]
    return None


def queue_arguments(settings: Settings) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX_EXCHANGE,
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-delivery-limit": DELIVERY_LIMIT,
    }


class Broker:
    """A robust connection with one confirm-mode publishing channel."""

    def __init__(self, settings: Settings, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.connection = connection
        self._channel: AbstractChannel | None = None
        self._dlx: AbstractExchange | None = None

    @classmethod
    async def connect(cls, settings: Settings, *, timeout: float = 10.0) -> Broker:
        try:
            connection = await aio_pika.connect_robust(settings.amqp_url, timeout=timeout)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot connect to the broker: {type(exc).__name__}") from exc
        broker = cls(settings, connection)
        await broker.declare()
        return broker

    async def declare(self) -> None:
        """Declare the exchange and queues, idempotently."""
        channel = await self.connection.channel(publisher_confirms=True)
        self._dlx = await channel.declare_exchange(
            DLX_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dead = await channel.declare_queue(
            self.settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(self._dlx, routing_key=self.settings.dead_letter_queue)
        await channel.declare_queue(
            self.settings.queue, durable=True, arguments=queue_arguments(self.settings)
        )
        self._channel = channel

    async def _publish(
        self, exchange: AbstractExchange, routing_key: str, body: bytes, message_id: str
    ) -> None:
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            # how far the queue has got, for the sweeper's lost wake-ups (sweeper.QueueHead)
            timestamp=datetime.now(UTC),
        )
        await exchange.publish(message, routing_key=routing_key, timeout=PUBLISH_TIMEOUT_SECONDS)

    async def publish(self, ids: Sequence[str], *, per_message: int = IDS_PER_MESSAGE) -> None:
        """Publish the ids to the work queue, ``per_message`` to a message; wait for every
        confirm.

        Raises :class:`BrokerUnavailable` if any publish is not confirmed; the caller leaves
        those documents unpublished and the sweeper publishes them later.
        """
        if not ids:
            return
        channel = self._require_channel()
        exchange = channel.default_exchange
        chunks = [ids[i : i + per_message] for i in range(0, len(ids), max(1, per_message))]
        try:
            await asyncio.gather(
                *(self._publish(exchange, self.settings.queue, encode_ids(c), c[0]) for c in chunks)
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"publish not confirmed: {type(exc).__name__}") from exc

    async def publish_body(self, body: bytes, *, dead: bool = False) -> None:
        """Publish a body as it is to the work queue (``dead``: the dead-letter queue), for
        messages this module did not encode: old forms, garbage in tests."""
        channel = self._require_channel()
        assert self._dlx is not None
        exchange, queue = (
            (self._dlx, self.settings.dead_letter_queue)
            if dead
            else (channel.default_exchange, self.settings.queue)
        )
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key=queue, timeout=PUBLISH_TIMEOUT_SECONDS)

    async def publish_dead(self, notification_id: str, reason: str) -> None:
        """Put a notification id on the dead-letter queue, with the reason."""
        self._require_channel()
        assert self._dlx is not None
        try:
            await self._publish(
                self._dlx,
                self.settings.dead_letter_queue,
                encode(notification_id, reason=reason),
                notification_id,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"dead-letter publish failed: {type(exc).__name__}") from exc

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in the work queue and in the dead-letter queue."""
        channel = self._require_channel()
        # On the raw channel: a robust channel answers a passive declare of a queue it
        # declared before from its cache, with the count of that first declaration.
        underlay = await channel.get_underlay_channel()
        depths: dict[str, int] = {}
        for name in (self.settings.queue, self.settings.dead_letter_queue):
            declared = await underlay.queue_declare(name, passive=True)
            depths[name] = declared.message_count or 0
        return depths

    async def ping(self) -> None:
        if self.connection.is_closed or self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("broker connection is closed")

    def _require_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("broker channel is closed")
        return self._channel

    async def close(self) -> None:
        await self.connection.close()


async def consuming_channel(
    connection: AbstractConnection, settings: Settings, prefetch: int
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel of its own for a consumer, with ``prefetch``, and the work queue declared
    on it as :meth:`Broker.declare` does (so whichever process comes first creates it)."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(
        settings.queue, durable=True, arguments=queue_arguments(settings)
    )
    return channel, queue


@asynccontextmanager
async def existing_queue(connection: AbstractConnection, name: str) -> AsyncIterator[AbstractQueue]:
    """The queue ``name`` (which must exist: declared passively) on a fresh channel, closed on
    leaving: for reading the dead letters, and for tests that look into a queue. A fresh
    channel, because a robust one answers a repeated declare from its cache."""
    channel = await connection.channel()
    try:
        yield await channel.declare_queue(name, passive=True)
    finally:
        await channel.close()


async def delete_queues(settings: Settings) -> None:
    """Delete the work and dead-letter queues of ``settings``: what a benchmark or a test
    declared for itself (quorum queues left behind pile up in RabbitMQ and slow it down)."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in (settings.queue, settings.dead_letter_queue):
            await channel.queue_delete(name)
