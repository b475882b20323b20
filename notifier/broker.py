"""RabbitMQ: the durable work queues that carry wake-ups (notification ids), via aio-pika.

Each lane has its own queues (docs/design.md section 1, lanes):
- the transactional lane: ``<queue>``, dead letters in ``<queue>.dead``;
- the bulk lane: one queue per app, ``<queue>.bulk.<app>`` (declared by the first publish
  for that app; workers find the apps in the store), dead letters in ``<queue>.dead.bulk``.
Every queue is a durable quorum queue; messages are persistent, every publish waits for the
broker's confirm, and a publish no queue takes (a queue deleted meanwhile) fails rather than
vanish. A work message carries up to :data:`IDS_PER_MESSAGE` ids as ``{"ids": [...]}``
(the older one-id form ``{"id": ...}`` is still read). Dead letters (exhausted retries,
poison messages) go through the ``notifier.dlx`` exchange to their lane's dead-letter
queue, where ``notifier dlq`` reads and replays them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
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

from notifier import amqp
from notifier.logging import get_logger
from notifier.models import Lane, Wake
from notifier.settings import Settings

log = get_logger(__name__)

DLX_EXCHANGE = "notifier.dlx"
# A fanout exchange on which a publisher announces each bulk queue it declares, so that the
# workers consume a new app's queue at once (they also ask the store every few seconds).
BULK_APPS_EXCHANGE = "notifier.bulk.apps"
DELIVERY_LIMIT = 20  # a message redelivered this often is poison: dead-letter it
PUBLISH_TIMEOUT_SECONDS = 10.0
IDS_PER_MESSAGE = 50  # ids packed into one work message
RENEW_CHANNEL_SECONDS = 5.0  # a nacked publish replaces the publishing channel this often


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


MAX_QUEUE_NAME = 255  # AMQP's limit (bytes; our names are ASCII)
# An app name used as it is in a queue name; any other is replaced by a digest of it.
_PLAIN_APP = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def bulk_queue_prefix(settings: Settings) -> str:
    return f"{settings.queue}.bulk."


def queue_for(settings: Settings, lane: Lane, app: str) -> str:
    """The work queue of ``lane`` (for the bulk lane, of ``app``)."""
    if lane is Lane.TRANSACTIONAL:
        return settings.queue
    name = bulk_queue_prefix(settings) + app
    if _PLAIN_APP.match(app) and len(name) <= MAX_QUEUE_NAME:
        return name
    # ":" is in no plain name, so a digest name never meets a plain one
    return bulk_queue_prefix(settings) + "sha256:" + hashlib.sha256(app.encode()).hexdigest()[:24]


def dead_queue_for(settings: Settings, lane: Lane) -> str:
    """The dead-letter queue of ``lane``."""
    if lane is Lane.TRANSACTIONAL:
        return settings.dead_letter_queue
    return f"{settings.dead_letter_queue}.bulk"


def lane_of_queue(settings: Settings, name: str) -> Lane:
    """The lane a work or dead-letter queue of these settings belongs to."""
    bulk = name.startswith(bulk_queue_prefix(settings)) or name == dead_queue_for(
        settings, Lane.BULK
    )
    return Lane.BULK if bulk else Lane.TRANSACTIONAL


def queue_arguments(settings: Settings, lane: Lane = Lane.TRANSACTIONAL) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX_EXCHANGE,
        "x-dead-letter-routing-key": dead_queue_for(settings, lane),
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def _routes(wakes: Iterable[Wake]) -> dict[tuple[Lane, str], list[str]]:
    """The wakes' ids grouped by queue (lane, and app for the bulk lane), in order."""
    routes: dict[tuple[Lane, str], list[str]] = {}
    for wake in wakes:
        app = wake.app if wake.lane is Lane.BULK else ""
        routes.setdefault((wake.lane, app), []).append(wake.id)
    return routes


class Broker:
    """A robust connection with one confirm-mode publishing channel."""

    def __init__(self, settings: Settings, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.connection = connection
        self._channel: AbstractChannel | None = None
        self._dlx: AbstractExchange | None = None
        self._announce: AbstractExchange | None = None
        self._declared: set[str] = set()  # the work queues this broker declared
        self._declaring: dict[str, asyncio.Future[AbstractQueue]] = {}
        self._renewed_at = 0.0  # when the publishing channel was last replaced

    @classmethod
    async def connect(cls, settings: Settings, *, timeout: float = 10.0) -> Broker:
        try:
            # the first live node of NOTIFIER_AMQP_URL; another live one if it is lost
            connection = await amqp.connect_robust(settings, timeout=timeout)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot connect to the broker: {type(exc).__name__}") from exc
        broker = cls(settings, connection)
        await broker.declare()
        return broker

    async def declare(self) -> None:
        """Declare the exchange, both lanes' dead-letter queues and the transactional work
        queue, idempotently (a bulk queue is declared by the first publish to it)."""
        # on_return_raises: a publish no queue takes fails instead of being confirmed
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._dlx = await channel.declare_exchange(
            DLX_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._announce = await declare_announcements(channel)
        for lane in Lane:
            name = dead_queue_for(self.settings, lane)
            dead = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await dead.bind(self._dlx, routing_key=name)
        await channel.declare_queue(
            self.settings.queue, durable=True, arguments=queue_arguments(self.settings)
        )
        self._declared.add(self.settings.queue)
        self._channel = channel

    @property
    def declared_queues(self) -> frozenset[str]:
        """The work queues this broker declared (the transactional one, and each bulk queue
        it published to)."""
        return frozenset(self._declared)

    async def _ensure_queue(
        self, channel: AbstractChannel, lane: Lane, name: str, app: str
    ) -> None:
        """Declare a bulk queue once per broker (concurrent publishes share the declare)."""
        if name in self._declared:
            return
        pending = self._declaring.get(name)
        if pending is None:
            pending = asyncio.ensure_future(
                channel.declare_queue(
                    name, durable=True, arguments=queue_arguments(self.settings, lane)
                )
            )
            self._declaring[name] = pending
            try:
                await pending
                self._declared.add(name)
            finally:
                del self._declaring[name]
            await self._announce_app(app)
        else:
            await pending

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

    async def publish(
        self,
        ids: Sequence[str],
        *,
        lane: Lane = Lane.TRANSACTIONAL,
        app: str = "",
        per_message: int = IDS_PER_MESSAGE,
    ) -> None:
        """Publish the ids to the work queue of ``lane`` (and ``app``, for the bulk lane),
        ``per_message`` to a message; wait for every confirm.

        Raises :class:`BrokerUnavailable` if any publish is not confirmed; the caller leaves
        those documents unpublished and the sweeper publishes them later.
        """
        if not ids:
            return
        channel = self._require_channel()
        exchange = channel.default_exchange
        queue = queue_for(self.settings, lane, app)
        chunks = [ids[i : i + per_message] for i in range(0, len(ids), max(1, per_message))]
        try:
            await self._ensure_queue(channel, lane, queue, app)
            await asyncio.gather(
                *(self._publish(exchange, queue, encode_ids(c), c[0]) for c in chunks)
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            if isinstance(exc, aio_pika.exceptions.PublishError):
                self._declared.discard(queue)  # deleted meanwhile: declare it again next time
            elif isinstance(exc, aio_pika.exceptions.DeliveryError):
                await self._renew_channel()
            raise BrokerUnavailable(f"publish not confirmed: {type(exc).__name__}") from exc

    async def _renew_channel(self) -> None:
        """Publish on a new channel from now on (at most every RENEW_CHANNEL_SECONDS).

        Why: after a cluster node was lost, RabbitMQ 3.10 went on nacking every publish of
        the channel the robust connection restored on another node, for minutes, while
        other channels' publishes to the same quorum queue were confirmed."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._renewed_at < RENEW_CHANNEL_SECONDS:
            return
        self._renewed_at = loop.time()
        old = self._channel
        try:
            await self.declare()  # a new channel, its exchanges and queues (idempotent)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError):
            return  # the old one stays; the next nack tries again
        log.warning("publish_channel_renewed", reason="nack")
        if old is not None and old is not self._channel:
            with suppress(TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError):
                await old.close()

    async def _announce_app(self, app: str) -> None:
        """Tell the workers an app's bulk queue exists (best effort: they also ask the
        store). The work queue's name tells deployments sharing a vhost apart."""
        if self._announce is None:
            return
        message = aio_pika.Message(orjson.dumps({"queue": self.settings.queue, "app": app}))
        try:
            # not mandatory: with no worker listening nobody needs to hear it
            await self._announce.publish(
                message, routing_key="", mandatory=False, timeout=PUBLISH_TIMEOUT_SECONDS
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError):
            return

    async def publish_wakes(
        self, wakes: Iterable[Wake], *, per_message: int = IDS_PER_MESSAGE
    ) -> None:
        """Publish each notification to its lane's queue (see :meth:`publish`); raises
        :class:`BrokerUnavailable` if any publish is not confirmed."""
        routes = _routes(wakes)
        results = await asyncio.gather(
            *(
                self.publish(ids, lane=lane, app=app, per_message=per_message)
                for (lane, app), ids in routes.items()
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

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

    async def publish_dead(
        self, notification_id: str, reason: str, lane: Lane = Lane.TRANSACTIONAL
    ) -> None:
        """Put a notification id on its lane's dead-letter queue, with the reason."""
        self._require_channel()
        assert self._dlx is not None
        try:
            await self._publish(
                self._dlx,
                dead_queue_for(self.settings, lane),
                encode(notification_id, reason=reason),
                notification_id,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"dead-letter publish failed: {type(exc).__name__}") from exc

    async def queue_depths(self, queues: Iterable[str] = ()) -> dict[str, int]:
        """Messages ready in the transactional work queue, in ``queues`` (bulk queues: those
        a worker consumes) and in both dead-letter queues."""
        self._require_channel()
        names = [self.settings.queue, *sorted(set(queues) - {self.settings.queue})]
        names += [dead_queue_for(self.settings, lane) for lane in Lane]
        depths: dict[str, int] = {}
        # A channel of its own: a passive declare of a queue deleted meanwhile closes its
        # channel, which must not be the one that publishes.
        channel = await self.connection.channel()
        try:
            # On the raw channel: a robust channel answers a passive declare of a queue it
            # declared before from its cache, with the count of that first declaration.
            underlay = await channel.get_underlay_channel()
            for name in names:
                declared = await underlay.queue_declare(name, passive=True)
                depths[name] = declared.message_count or 0
        finally:
            await channel.close()
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


async def consuming_channel(connection: AbstractConnection, prefetch: int) -> AbstractChannel:
    """A channel of its own for consumers, each of which may hold ``prefetch`` messages."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    return channel


async def declare_announcements(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(
        BULK_APPS_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )


async def announced_queues(channel: AbstractChannel) -> AbstractQueue:
    """A queue of this consumer's own (exclusive, gone with its connection) that hears every
    bulk queue a publisher declares: ``{"queue": <NOTIFIER_QUEUE>, "app": app}`` messages
    (:func:`decode_announcement`)."""
    exchange = await declare_announcements(channel)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange)
    return queue


def decode_announcement(body: bytes, settings: Settings) -> str | None:
    """The app an announcement names, if it is one of these settings' (else None)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or value.get("queue") != settings.queue:
        return None
    app = value.get("app")
    return app if isinstance(app, str) and app else None


async def work_queue(
    channel: AbstractChannel, settings: Settings, lane: Lane, app: str = ""
) -> AbstractQueue:
    """The work queue of ``lane`` (and ``app``) declared on ``channel`` as a publisher
    declares it (so whichever process comes first creates it)."""
    return await channel.declare_queue(
        queue_for(settings, lane, app), durable=True, arguments=queue_arguments(settings, lane)
    )


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


async def delete_queues(settings: Settings, apps: Iterable[str] = ()) -> None:
    """Delete the work and dead-letter queues of ``settings`` (and the bulk queues of
    ``apps``): what a benchmark or a test declared for itself (quorum queues left behind pile
    up in RabbitMQ and slow it down)."""
    connection = await amqp.connect_once(settings)
    async with connection:
        channel = await connection.channel()
        names = [settings.queue, *(dead_queue_for(settings, lane) for lane in Lane)]
        names += [queue_for(settings, Lane.BULK, app) for app in apps]
        for name in names:
            await channel.queue_delete(name)
