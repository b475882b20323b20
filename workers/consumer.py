"""The consumer loop: broker messages in, deliveries out, acks after durable outcomes.

A message carries one or more ids (``notifier.broker``). ``concurrency`` bounds the
notifications a worker has claimed and not yet finished: a message takes one slot per id
(at most ``concurrency``; a bigger message is delivered in parts) before it claims its ids
in one ``claim_many``, and gives each back as soon as that id's outcome is durable (the
message's ack follows its last one).
Messages are fetched on ``ceil(concurrency / NOTIFIER_PREFETCH)`` channels of the worker's
one robust connection, each with ``prefetch`` unacked messages; a message waiting for slots
has claimed nothing, so after a crash it simply comes back. Each message is handled in a
task this class owns (not the channel's), so a broker disconnect never cancels a push
half-way: the outcomes are still written, and only the ack is lost (the redelivery then finds
the documents final and drops them as duplicates).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from notifier import metrics
from notifier.broker import consuming_channel, decode
from notifier.delivery import Deliverer
from notifier.logging import get_logger
from notifier.retrying import Backoff, Stopped, retry
from notifier.settings import Settings
from notifier.store.base import StoreUnavailable
from notifier.sweeper import QueueHead

log = get_logger(__name__)

# While the store is down a message is held (not requeued, which would count toward the
# queue's delivery limit) and its delivery retried, for up to this long; then requeued.
STORE_HOLD_SECONDS = 30.0
# jittered: the held messages do not all retry in step against a store that came back
STORE_RETRY_BACKOFF = Backoff(first_seconds=0.1, max_seconds=2.0, jitter=0.5)
SETTLE_TIMEOUT_SECONDS = 5.0


class Settle(StrEnum):
    """How a message is settled once its deliveries ended (the value labels broker errors)."""

    ACK = "ack"  # every outcome durable (or its claim missed)
    NACK = "nack"  # requeue: the store stayed down, or a delivery crashed (after a pause)
    REJECT = "reject"  # garbage: to the dead-letter queue, never requeued
    CRASHED = "crashed"  # a delivery raised: settled as NACK after a pause


class Slots:
    """A first-come first-served semaphore whose holders take several units at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[Held]:
        """Take ``n`` units (at most ``capacity``); the holder may give them back one by one."""
        n = max(1, min(n, self.capacity))
        await self._acquire(n)
        held = Held(self, n)
        try:
            yield held
        finally:
            held.release_all()

    async def _acquire(self, n: int) -> None:
        if not self._waiters and self.free >= n:
            self.free -= n
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(n)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()  # a smaller request behind us may fit now
            raise

    def _release(self, n: int) -> None:
        self.free += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            n, future = self._waiters.popleft()
            self.free -= n
            future.set_result(None)


class Held:
    """Units taken from :class:`Slots`, given back as each delivery finishes."""

    __slots__ = ("_count", "_slots")

    def __init__(self, slots: Slots, count: int) -> None:
        self._slots = slots
        self._count = count

    def release_one(self) -> None:
        if self._count:
            self._count -= 1
            self._slots._release(1)

    def release_all(self) -> None:
        if self._count:
            count, self._count = self._count, 0
            self._slots._release(count)


class Consumer:
    """Consumes the work queue on several channels and runs one task per message."""

    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        deliverer: Deliverer,
        *,
        concurrency: int,
        queue_head: QueueHead | None = None,
    ) -> None:
        self.settings = settings
        self.queue_head = queue_head or QueueHead()
        self.connection = connection
        self.deliverer = deliverer
        self.channel_count = max(1, math.ceil(concurrency / settings.prefetch))
        self.prefetch = max(1, math.ceil(concurrency / self.channel_count))
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._slots = Slots(max(1, concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()  # set by stop(): ends the store-outage retries at once

    async def start(self) -> None:
        """Open the channels and start consuming (robust: restored after a reconnect)."""
        for _ in range(self.channel_count):
            channel, queue = await consuming_channel(self.connection, self.settings, self.prefetch)
            tag = await queue.consume(self._on_message)
            self._channels.append(channel)
            self._consumers.append((queue, tag))
        log.info("consuming", channels=self.channel_count, prefetch=self.prefetch)

    @property
    def alive(self) -> bool:
        """Consuming on every channel (False while the broker is down or after stop)."""
        return (
            bool(self._channels)
            and not self._stop.is_set()
            and not self.connection.is_closed
            and all(not channel.is_closed for channel in self._channels)
        )

    @property
    def slots_in_use(self) -> int:
        """Notifications holding a slot: being claimed, pushed or written (``/stats``)."""
        return self._slots.capacity - self._slots.free

    @property
    def messages(self) -> int:
        """Messages taken from the broker and not yet settled (some wait for slots)."""
        return len(self._tasks)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stop.is_set():
            return  # left unacked: the broker requeues it when the channel closes
        self.queue_head.seen(message.timestamp)
        task = asyncio.get_running_loop().create_task(self._handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        metrics.MESSAGES_CONSUMED.inc()
        ids = decode(message.body)
        if ids is None:
            metrics.DEAD_LETTERED.labels("garbage").inc()
            log.warning("garbage_message", size=len(message.body))
            await self._settle(message, Settle.REJECT)
            return
        how = Settle.ACK
        step = self._slots.capacity
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            async with self._slots.hold(len(part)) as held:
                if self._stop.is_set():
                    return  # this part claimed nothing: left unacked, the broker requeues it
                # each finished delivery frees its slot at once: a message's stragglers do
                # not hold back the next message (its ack still waits for all of them)
                how = await self._deliver(part, held.release_one)
            if how is not Settle.ACK:
                break
        if how is Settle.CRASHED:  # a bug: requeue (the delivery limit dead-letters a poison one)
            await asyncio.sleep(1.0)
            how = Settle.NACK
        await self._settle(message, how)

    async def _deliver(self, ids: Sequence[str], each_done: Callable[[], None]) -> Settle:
        """Deliver ``ids``; how to settle their message: ``ACK``, ``NACK`` or ``CRASHED``."""
        try:
            # a retry re-claims every id: those finished meanwhile are dropped as final
            await retry(
                lambda: self.deliverer.deliver_many(ids, each_done=each_done),
                what="delivery",
                backoff=STORE_RETRY_BACKOFF,
                retry_on=StoreUnavailable,
                stop=self._stop,
                budget_seconds=STORE_HOLD_SECONDS,
                event="store_unavailable_retry",
                level=logging.DEBUG,  # one line per held message and attempt: too many to warn
                log_fields={"count": len(ids)},
            )
        except (StoreUnavailable, Stopped):
            log.warning("store_unavailable_requeue", count=len(ids))
            return Settle.NACK
        except Exception:
            log.exception("delivery_crashed", count=len(ids))
            return Settle.CRASHED
        return Settle.ACK

    async def _settle(self, message: AbstractIncomingMessage, how: Settle) -> None:
        if how is Settle.ACK:
            settle = message.ack()
        elif how is Settle.REJECT:
            settle = message.reject(requeue=False)
        else:
            settle = message.nack(requeue=True)
        try:
            # bounded: on a channel lost in a broker restart a settle can wait forever
            await asyncio.wait_for(settle, SETTLE_TIMEOUT_SECONDS)
        except Exception as exc:  # channel gone: the broker redelivers; claims drop dupes
            metrics.BROKER_ERRORS.labels(how.value).inc()
            log.warning("settle_failed", how=how.value, error=type(exc).__name__)

    async def stop(self, timeout: float) -> bool:
        """Stop taking messages and let in-flight deliveries finish (bounded).

        Returns True when every delivery finished in time; the rest are cancelled (their
        messages stay unacked and come back; their locks expire and the sweeper recovers).
        """
        self._stop.set()
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag, timeout=5)
            except Exception as exc:  # broker down: closing the channel stops it anyway
                log.warning("consumer_cancel_failed", error=type(exc).__name__)
        if not self._tasks:
            return True
        log.info("draining", messages=len(self._tasks), slots_in_use=self.slots_in_use)
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
