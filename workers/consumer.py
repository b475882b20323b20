"""The consumer loop: broker messages in, deliveries out, acks after durable outcomes.

Concurrency maps to consumers: ``ceil(concurrency / NOTIFIER_PREFETCH)`` channels on the
worker's one robust connection, each consuming the work queue with ``prefetch`` unacked
messages, so at most about ``concurrency`` deliveries run at once and no consumer hoards
more than the design's prefetch. Each message is handled in a task this class owns (not
the channel's), so a broker disconnect never cancels a push half-way: the delivery still
writes its outcome, and only the ack is lost (the redelivery then finds the document
final and is dropped as a duplicate).
"""

from __future__ import annotations

import asyncio
import math

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from notifier import metrics
from notifier.broker import decode, queue_arguments
from notifier.delivery import Deliverer
from notifier.logging import get_logger
from notifier.settings import Settings
from notifier.store.base import StoreUnavailable

log = get_logger(__name__)

# While the store is down a message is held (not requeued, which would count toward the
# queue's delivery limit) and its delivery retried, for up to this long; then requeued.
STORE_HOLD_SECONDS = 30.0
STORE_RETRY_MAX_DELAY = 2.0
SETTLE_TIMEOUT_SECONDS = 5.0


class Consumer:
    """Consumes the work queue on several channels and runs one task per message."""

    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        deliverer: Deliverer,
        *,
        concurrency: int,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.deliverer = deliverer
        self.channel_count = max(1, math.ceil(concurrency / settings.prefetch))
        self.prefetch = max(1, math.ceil(concurrency / self.channel_count))
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Open the channels and start consuming (robust: restored after a reconnect)."""
        for _ in range(self.channel_count):
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.declare_queue(
                self.settings.queue, durable=True, arguments=queue_arguments(self.settings)
            )
            tag = await queue.consume(self._on_message)
            self._channels.append(channel)
            self._consumers.append((queue, tag))
        log.info("consuming", channels=self.channel_count, prefetch=self.prefetch)

    @property
    def alive(self) -> bool:
        """Consuming on every channel (False while the broker is down or after stop)."""
        return (
            bool(self._channels)
            and not self._stopping
            and not self.connection.is_closed
            and all(not channel.is_closed for channel in self._channels)
        )

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # left unacked: the broker requeues it when the channel closes
        task = asyncio.get_running_loop().create_task(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        metrics.MESSAGES_CONSUMED.inc()
        notification_id = decode(message.body)
        if notification_id is None:
            metrics.DEAD_LETTERED.labels("garbage").inc()
            log.warning("garbage_message", size=len(message.body))
            await self._settle(message, "reject")
            return
        try:
            await self._deliver(notification_id)
        except StoreUnavailable:
            log.warning("store_unavailable_requeue", notification_id=notification_id)
            await self._settle(message, "nack")
            return
        except Exception:  # a bug: requeue (the delivery limit dead-letters a poison one)
            log.exception("delivery_crashed", notification_id=notification_id)
            await asyncio.sleep(1.0)
            await self._settle(message, "nack")
            return
        await self._settle(message, "ack")

    async def _deliver(self, notification_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STORE_HOLD_SECONDS
        delay = 0.1
        while True:
            try:
                await self.deliverer.deliver(notification_id)
                return
            except StoreUnavailable:
                if self._stopping or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_DELAY)

    async def _settle(self, message: AbstractIncomingMessage, how: str) -> None:
        if how == "ack":
            settle = message.ack()
        elif how == "reject":
            settle = message.reject(requeue=False)
        else:
            settle = message.nack(requeue=True)
        try:
            # bounded: on a channel lost in a broker restart a settle can wait forever
            await asyncio.wait_for(settle, SETTLE_TIMEOUT_SECONDS)
        except Exception as exc:  # channel gone: the broker redelivers; claims drop dupes
            metrics.BROKER_ERRORS.labels(how).inc()
            log.warning("settle_failed", how=how, error=type(exc).__name__)

    async def stop(self, timeout: float) -> bool:
        """Stop taking messages and let in-flight deliveries finish (bounded).

        Returns True when every delivery finished in time; the rest are cancelled (their
        messages stay unacked and come back; their locks expire and the sweeper recovers).
        """
        self._stopping = True
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag, timeout=5)
            except Exception as exc:  # broker down: closing the channel stops it anyway
                log.warning("consumer_cancel_failed", error=type(exc).__name__)
        if not self._tasks:
            return True
        log.info("draining", inflight=len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("drain_timed_out", cancelled=len(pending))
        return not pending

    async def close(self) -> None:
        for channel in self._channels:
            try:
                await channel.close()
            except Exception as exc:  # already closed with the connection
                log.debug("channel_close_failed", error=type(exc).__name__)
        self._channels.clear()
