"""The consumer loop: broker messages in, deliveries out, acks after durable outcomes.

A message carries one or more ids (``notifier.broker``). ``concurrency`` bounds the
notifications a worker has claimed and not yet finished: a message takes one slot per id
(a bigger message is delivered in parts) before it claims its ids in one ``claim_many``,
and gives each back as soon as that id's outcome is durable (the message's ack follows its
last one). The lanes share the slots as :mod:`workers.slots` says: transactional first and
never short of its reserve, bulk in turn between apps.
The worker consumes the lanes of ``NOTIFIER_LANES``: the transactional queue, and the bulk
queue of every app that has open bulk notifications (asked of the store every
:data:`BULK_APPS_REFRESH_SECONDS`; a new app's queue is consumed from then on).
Messages are fetched on ``ceil(concurrency / NOTIFIER_PREFETCH)`` channels of the worker's
one robust connection; on each, every queue's consumer holds up to ``prefetch`` unacked
messages. A message waiting for slots has claimed nothing, so after a crash it simply
comes back. Each message is handled in a
task this class owns (not the channel's), so a broker disconnect never cancels a push
half-way: the outcomes are still written, and only the ack is lost (the redelivery then finds
the documents final and drops them as duplicates).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from notifier import metrics
from notifier.broker import (
    announced_queues,
    consuming_channel,
    decode,
    decode_announcement,
    queue_for,
    work_queue,
)
from notifier.delivery import Deliverer
from notifier.logging import get_logger
from notifier.models import Lane, as_utc
from notifier.retrying import Backoff, Stopped, retry
from notifier.settings import Settings
from notifier.store.base import StoreUnavailable
from notifier.sweeper import QueueHead
from workers.slots import LaneSlots

log = get_logger(__name__)

# While the store is down a message is held (not requeued, which would count toward the
# queue's delivery limit) and its delivery retried, for up to this long; then requeued.
STORE_HOLD_SECONDS = 30.0
# jittered: the held messages do not all retry in step against a store that came back
STORE_RETRY_BACKOFF = Backoff(first_seconds=0.1, max_seconds=2.0, jitter=0.5)
SETTLE_TIMEOUT_SECONDS = 5.0
# How often the worker asks the store which apps have bulk work (a new app's first bulk
# notifications wait at most about this long for a consumer).
BULK_APPS_REFRESH_SECONDS = 2.0


class Settle(StrEnum):
    """How a message is settled once its deliveries ended (the value labels broker errors)."""

    ACK = "ack"  # every outcome durable (or its claim missed)
    NACK = "nack"  # requeue: the store stayed down, or a delivery crashed (after a pause)
    REJECT = "reject"  # garbage: to the dead-letter queue, never requeued
    CRASHED = "crashed"  # a delivery raised: settled as NACK after a pause


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
        bulk_apps: Callable[[], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.settings = settings
        self.queue_head = queue_head or QueueHead()
        self.connection = connection
        self.deliverer = deliverer
        self.channel_count = max(1, math.ceil(concurrency / settings.prefetch))
        self.prefetch = max(1, math.ceil(concurrency / self.channel_count))
        self.lanes = frozenset(settings.lanes)
        self._bulk_apps = bulk_apps
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._apps: set[str] = set()  # the apps whose bulk queues this worker consumes
        reserve = math.ceil(concurrency * settings.transactional_reserve)
        if Lane.TRANSACTIONAL not in self.lanes:
            reserve = 0  # nothing to keep slots for
        self._slots = LaneSlots(max(1, concurrency), reserve)
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()  # set by stop(): ends the store-outage retries at once
        # per message: the gauge's children looked up once (a labels() call takes its lock)
        self._queue_wait = {lane: metrics.QUEUE_WAIT.labels(lane.value) for lane in Lane}

    async def start(self) -> None:
        """Open the channels and start consuming (robust: restored after a reconnect)."""
        for _ in range(self.channel_count):
            self._channels.append(await consuming_channel(self.connection, self.prefetch))
        self.queue_head.all_lanes = self.lanes == frozenset(Lane)
        if Lane.TRANSACTIONAL in self.lanes:
            await self._consume(Lane.TRANSACTIONAL)
        if Lane.BULK in self.lanes and self._bulk_apps is not None:
            announced = await announced_queues(self._channels[0])
            self._consumers.append((announced, await announced.consume(self._on_announced)))
            await self.refresh_bulk_apps()
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())
        log.info(
            "consuming",
            channels=self.channel_count,
            prefetch=self.prefetch,
            lanes=",".join(sorted(self.lanes)),
            reserve=self._slots.reserve,
        )

    async def _consume(self, lane: Lane, app: str = "") -> None:
        """Consume the queue of ``lane`` (and ``app``) on every channel."""
        name = queue_for(self.settings, lane, app)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(message, lane, app, name)

        for channel in self._channels:
            queue = await work_queue(channel, self.settings, lane, app)
            self._consumers.append((queue, await queue.consume(on_message)))
        self.queue_head.consumed.add(name)

    async def refresh_bulk_apps(self) -> None:
        """Consume the bulk queue of each app that has bulk work and is new to this worker."""
        assert self._bulk_apps is not None
        try:
            apps = await self._bulk_apps()
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("bulk_apps").inc()
            return
        for app in apps:
            await self._consume_bulk(app)

    async def _consume_bulk(self, app: str) -> None:
        if app in self._apps or self._stop.is_set():
            return
        self._apps.add(app)  # first: a concurrent refresh or announcement skips it
        try:
            await self._consume(Lane.BULK, app)
        except BaseException:
            self._apps.discard(app)
            raise
        log.info("bulk_queue_consumed", app=app)

    async def _on_announced(self, message: AbstractIncomingMessage) -> None:
        """A publisher declared a bulk queue: consume it now rather than at the next
        refresh. (Acked at once: a lost announcement only waits for the refresh.)"""
        await message.ack()
        app = decode_announcement(message.body, self.settings)
        if app is not None and app not in self._apps:
            # in a task of its own: the declares it sends must not wait inside a delivery
            task = asyncio.get_running_loop().create_task(self._consume_announced(app))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _consume_announced(self, app: str) -> None:
        try:
            await self._consume_bulk(app)
        except Exception as exc:  # broker trouble: the next refresh finds it
            log.warning("bulk_queue_consume_failed", error=type(exc).__name__)

    async def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(BULK_APPS_REFRESH_SECONDS)
            try:
                await self.refresh_bulk_apps()
            except Exception as exc:  # broker down: the next round tries again
                log.warning("bulk_apps_refresh_failed", error=type(exc).__name__)

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

    def lane_stats(self) -> dict[str, dict[str, object]]:
        """Each consumed lane's slots and waiting messages, for ``/stats``."""
        waiting = self._slots.waiting
        stats: dict[str, dict[str, object]] = {}
        for lane in sorted(self.lanes):
            stats[lane.value] = {
                "slots_in_use": self._slots.in_use[lane],
                "slot_limit": self._slots.limit(lane),
                "messages_waiting": waiting[lane],
            }
        if Lane.TRANSACTIONAL in self.lanes:
            stats[Lane.TRANSACTIONAL.value]["reserved_slots"] = self._slots.reserve
        if Lane.BULK in self.lanes:
            stats[Lane.BULK.value]["apps"] = sorted(self._apps)
        return stats

    @property
    def messages(self) -> int:
        """Messages taken from the broker and not yet settled (some wait for slots)."""
        return len(self._tasks)

    async def _on_message(
        self, message: AbstractIncomingMessage, lane: Lane, app: str, queue: str
    ) -> None:
        if self._stop.is_set():
            return  # left unacked: the broker requeues it when the channel closes
        self.queue_head.seen(queue, message.timestamp)
        if message.timestamp is not None:
            waited = time.time() - as_utc(message.timestamp).timestamp()
            self._queue_wait[lane].set(max(0.0, waited))
        task = asyncio.get_running_loop().create_task(self._handle(message, lane, app))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, message: AbstractIncomingMessage, lane: Lane, app: str) -> None:
        metrics.MESSAGES_CONSUMED.inc()
        ids = decode(message.body)
        if ids is None:
            metrics.DEAD_LETTERED.labels("garbage").inc()
            log.warning("garbage_message", size=len(message.body))
            await self._settle(message, Settle.REJECT)
            return
        how = Settle.ACK
        step = self._slots.limit(lane)
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            async with self._slots.hold(len(part), lane, app) as held:
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
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
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
