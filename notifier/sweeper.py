"""The sweeper: republishes what the queue no longer carries (docs/design.md section 1).

It runs inside every worker on a jittered interval. Each round it releases expired locks
(worker crashes: the unknown-outcome policy decides between resend and fail), then takes
due ``scheduled``/``retrying`` documents, never-published ``pending`` ones and lost
wake-ups, and publishes their ids. Every take is an atomic store update, so however many
sweepers run, each document is republished by one of them per round. A failed publish
clears ``published_at`` again so the next round retries.

Each id goes back to its lane's queue (the bulk lane: its app's queue, ``notifier.broker``).

A due retry is its own take and never waits on the queues' depth. Only the lost-wake-up
take does: a document published but unclaimed may simply be waiting its turn in a deep
queue. Each work queue is first in, first out, so once this worker has received a message
of that queue published at T, every wake-up published there before T has left it; one
published well before T (``stale_published_seconds``) and still unclaimed is lost
(:class:`QueueHead`). The take has one cut-off for every queue, so it is set by the queue
that is furthest behind: while a bulk backlog drains, a lost transactional wake-up is found
once that backlog's head has moved past it (lost wake-ups are rare: a publish confirmed and
then lost; an unconfirmed one is left unpublished, and taken after a fixed grace).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from notifier import metrics
from notifier.broker import lane_of_queue
from notifier.logging import get_logger
from notifier.models import OPEN_STATUSES, Lane, Wake, utcnow
from notifier.retrying import Backoff, retry
from notifier.settings import Settings
from notifier.store.base import NotificationStore, StoreUnavailable

log = get_logger(__name__)

TAKE_LIMIT = 500  # documents per store call; a round repeats calls up to MAX_TAKES_PER_ROUND
MAX_TAKES_PER_ROUND = 20
# The API publishes right after its insert and marks the ids once the broker confirmed;
# under load confirms take seconds, so wait well past that before assuming a lost publish.
UNPUBLISHED_GRACE_SECONDS = 30.0
# A cut-off no publish precedes: with it the lost-wake-up take finds nothing.
NO_PUBLISH_BEFORE = datetime(2000, 1, 1, tzinfo=UTC)
# After a failed publish the broker is down or overloaded (confirms late): the round stops
# and the next one waits, 2 s doubling up to 30 s (jittered, so that the workers' sweepers
# do not all come back in step), instead of piling more publishes on it.
PUBLISH_BACKOFF = Backoff(first_seconds=2.0, max_seconds=30.0, jitter=0.5)
PUBLISH_CHUNK = 100  # ids per confirmed publish burst, so a busy broker confirms in time
GAUGE_REFRESH_SECONDS = 12.0


class Publisher(Protocol):
    """What the sweeper needs of the broker (``notifier.broker.Broker`` fits)."""

    async def publish_wakes(self, wakes: Sequence[Wake]) -> None: ...

    async def publish_dead(
        self, notification_id: str, reason: str, lane: Lane = Lane.TRANSACTIONAL
    ) -> None: ...

    async def queue_depths(self, queues: Iterable[str] = ()) -> dict[str, int]: ...


class PublishFailed(Exception):
    """The broker did not confirm a publish; its ids were unmarked for a later round."""


class QueueHead:
    """How far each work queue this worker consumes has got, as it sees it: the publish time
    of the newest message it received from that queue (every publish is stamped,
    ``notifier.broker``).

    A queue hands messages out in order, so everything published to it before that time has
    been delivered (to some worker). Requeued and redelivered messages carry their old
    stamp and never move the head back. AMQP stamps are whole seconds, rounded down: the
    head errs early, on the safe side. The consumer records which queues it consumes, and
    whether it consumes every lane (a worker that sees only one lane cannot tell whether a
    wake-up of the other is lost)."""

    def __init__(self, consumed: Iterable[str] = ()) -> None:
        self.newest: dict[str, datetime] = {}
        self.consumed: set[str] = set(consumed)
        self.all_lanes = True

    def seen(self, queue: str, published: datetime | None) -> None:
        if published is None:  # a message from a publisher that does not stamp
            return
        if published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        newest = self.newest.get(queue)
        if newest is None or published > newest:
            self.newest[queue] = published


class Sweeper:
    """One worker's sweeper; :meth:`run` loops until cancelled."""

    def __init__(
        self,
        settings: Settings,
        store: NotificationStore,
        broker: Publisher,
        queue_head: QueueHead | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.queue_head = queue_head or QueueHead()
        # A wake-up is "lost" when its document stayed unclaimed this long after the queue
        # handed out its message: room for messages that wait in a busy worker's prefetch,
        # and for clocks of different hosts.
        self.stale_published_seconds = max(60.0, 2.0 * settings.lock_seconds)
        self.by_status: dict[str, int] = {}
        self.queue_depths: dict[str, int] = {}
        self.rounds = 0
        self._last_gauges = float("-inf")

    async def run(self) -> None:
        interval = self.settings.sweep_interval_seconds
        while True:
            try:  # a failed publish: the round is tried again after a backoff
                await retry(
                    self._round,
                    what="sweeper",
                    backoff=PUBLISH_BACKOFF,
                    retry_on=PublishFailed,
                    event="sweeper_paused",
                )
            except Exception:  # a bug in one round must not stop recovery for good
                log.exception("sweep_failed")
            # jitter spreads many workers' rounds apart
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))

    async def _round(self) -> None:
        try:
            await self.sweep_once()
        finally:  # the gauges stay fresh while the broker refuses publishes
            await self.refresh_gauges(max_age_seconds=GAUGE_REFRESH_SECONDS)

    async def sweep_once(self) -> int:
        """One round; returns how many ids it published. Never raises on store outages.

        Raises :class:`PublishFailed` when the broker did not confirm a publish: the rest of
        the round is skipped, and the caller backs off (:meth:`run`)."""
        published = 0
        try:
            published += await self._recover_locks()
            published += await self._publish_due()
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("sweep").inc()
            log.warning("sweep_store_unavailable")
        finally:
            self.rounds += 1
        return published

    async def _recover_locks(self) -> int:
        recovered = await self.store.recover_expired_locks(
            utcnow(), limit=TAKE_LIMIT, policy=self.settings.unknown_outcome
        )
        if not recovered:
            return 0
        unknown = sum(1 for r in recovered if r.unknown_attempt)
        if unknown:
            metrics.UNKNOWN_OUTCOMES.inc(unknown)
        to_publish = [r.wake for r in recovered if r.republish]
        held = [r for r in recovered if not r.republish]
        log.warning(
            "expired_locks_recovered",
            count=len(recovered),
            unknown_outcomes=unknown,
            republish=len(to_publish),
            held_failed=len(held),
        )
        for lock in held:
            await self._dead_letter(lock.id, "outcome_unknown", lock.lane)
        return await self._publish(to_publish, "expired_lock")

    async def _publish_due(self) -> int:
        total = 0
        for _ in range(MAX_TAKES_PER_ROUND):
            now = utcnow()
            wakes = await self.store.take_due_for_publish(
                now,
                limit=TAKE_LIMIT,
                unpublished_grace_seconds=UNPUBLISHED_GRACE_SECONDS,
                stale_published_seconds=self._stale_published_seconds(now),
            )
            total += await self._publish(wakes, "due")
            if len(wakes) < TAKE_LIMIT:
                break
        return total

    def _stale_published_seconds(self, now: datetime) -> float:
        """How old a publish must be for its unclaimed document to count as lost.

        With empty work queues every wake-up has been handed out: lost after
        ``stale_published_seconds``. While messages wait in a queue, an unclaimed document
        may be one of them (republishing it would only add duplicates): it counts as lost
        only once that queue has moved ``stale_published_seconds`` past its publish
        (:class:`QueueHead`), so however deep the backlog, a lost wake-up waits about as
        long as a message waits in the slowest queue, plus that margin. A worker that has
        received nothing yet from a queue that holds messages, or that consumes only one
        lane, knows too little and leaves the take to the others."""
        never = (now - NO_PUBLISH_BEFORE).total_seconds()
        if not self.queue_head.all_lanes or not self.queue_head.consumed:
            return never
        wait = 0.0
        for queue in self.queue_head.consumed:
            if self.queue_depths.get(queue, 0) == 0:
                continue
            head = self.queue_head.newest.get(queue)
            if head is None:
                return never
            wait = max(wait, (now - head).total_seconds())
        return self.stale_published_seconds + wait

    async def _publish(self, wakes: list[Wake], reason: str) -> int:
        published = 0
        for start in range(0, len(wakes), PUBLISH_CHUNK):
            chunk = wakes[start : start + PUBLISH_CHUNK]
            try:
                await self.broker.publish_wakes(chunk)
            except Exception as exc:  # BrokerUnavailable and friends: undo, retry later
                metrics.BROKER_ERRORS.labels("sweeper_publish").inc()
                log.warning(
                    "sweeper_publish_failed", count=len(wakes) - start, error=type(exc).__name__
                )
                self._count_published(published, reason)
                await self.store.unmark_published([w.id for w in wakes[start:]])
                raise PublishFailed(reason) from exc
            published += len(chunk)
        self._count_published(published, reason)
        return published

    def _count_published(self, count: int, reason: str) -> None:
        if count:
            metrics.SWEEPER_REPUBLISHED.labels(reason).inc(count)
            log.info("sweeper_published", count=count, reason=reason)

    async def _dead_letter(self, notification_id: str, reason: str, lane: Lane) -> None:
        try:
            await self.broker.publish_dead(notification_id, reason, lane)
        except Exception as exc:  # the failure is stored; only the DLQ entry is missing
            metrics.BROKER_ERRORS.labels("publish_dead").inc()
            log.warning("dead_letter_publish_failed", error=type(exc).__name__)
            return
        metrics.DEAD_LETTERED.labels(reason).inc()

    async def refresh_gauges(self, max_age_seconds: float = 0.0) -> None:
        """Refresh the backlog-by-status and queue-depth gauges (and the cached /stats
        figures), unless they are younger than ``max_age_seconds``.

        Only open documents are counted: the partial indexes hold them alone, so a count
        costs the size of the backlog. Counting final ones would scan the whole table
        (about 1.7 us of store CPU per stored row, every worker, every round); their rates
        are the workers' counters (``notifier_deliveries_total``)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_gauges < max_age_seconds:
            return
        self._last_gauges = now
        try:
            counts = await self.store.counts_by_status(open_only=True)
        except StoreUnavailable:
            metrics.STORE_ERRORS.labels("counts_by_status").inc()
        else:
            for status in OPEN_STATUSES:
                self.by_status[status.value] = counts.get(status, 0)
                metrics.NOTIFICATIONS_BY_STATUS.labels(status.value).set(counts.get(status, 0))
        try:
            self.queue_depths = await self.broker.queue_depths(self.queue_head.consumed)
        except Exception as exc:  # broker down or reconnecting: keep the last figures
            metrics.BROKER_ERRORS.labels("queue_depths").inc()
            log.debug("queue_depths_failed", error=type(exc).__name__)
            return
        ready = dict.fromkeys(Lane, 0)
        for queue, depth in self.queue_depths.items():
            lane = lane_of_queue(self.settings, queue)
            metrics.QUEUE_MESSAGES.labels(queue, lane.value).set(depth)
            if queue in self.queue_head.consumed:
                ready[lane] += depth
        for lane, depth in ready.items():
            if depth == 0:  # nothing waits: the lane's backlog age is nil
                metrics.QUEUE_WAIT.labels(lane.value).set(0.0)
