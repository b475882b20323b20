"""The write path: insert (durable), publish the pending notifications with confirms, then
answer.

Concurrent requests of one process are grouped (by the store's
:class:`~notifier.store.batching.MicroBatcher`): requests that reach the writer in the same
event-loop turn start one round together (one ``insert_many``, then one publish), and
while a round's insert is in flight later requests queue for the next one, so under load the
store and the broker see few large calls instead of many small ones. A lone request starts
its round on the next loop turn; at low rates grouping adds no wait. A request is
answered only after its round's insert committed and its publish was confirmed (or failed:
the document then stays unpublished and the worker's sweeper publishes it). Each
notification is published to its lane's queue (``Broker.publish_wakes``).
``published_at`` is recorded in the background, in bulk.

Each lane forms its rounds apart: a request holding a transactional notification never
queues behind campaign batches' inserts. With one queue of rounds a login code waited
behind every 500-item batch queued before it; four campaigns writing, the write of one
transactional notification took p50 549 ms, p99 1,006 ms, and apart p50 45 ms, p99 373 ms,
bulk rate unchanged (``python -m loadtest.writer_lanes [--one-queue]``, medians of 3, on
a shared 2-core machine).

Within a lane the rounds take the apps' queued requests in turn (deficit round robin by
notification count, ``api/fairness.py``), not first come first served: with one queue in
arrival order, a second app's batch waited behind every batch a campaign had queued in the
replica before it (as many rounds as the campaign's requests in flight, over two). Eight
campaign writers of 500-item batches, a second app's 500-item batch took p50 3,332 ms,
p99 5,919 ms in arrival order and p50 682 ms, p99 1,259 ms with turns (``python -m
loadtest.writer_lanes --second-app --campaigns 8 --probes 30 --probe-interval 0.2
[--fifo]``, medians of 3, alternating, on a 2-core machine at load 13 to 21 from others).

Grouping never couples requests' fates: when the store refuses a round's insert (anything
but being unavailable), each of its requests is written alone and only the refused one
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from api.fairness import DeficitRoundRobin
from api.schemas import MAX_BATCH
from notifier.broker import Broker, BrokerUnavailable
from notifier.logging import get_logger
from notifier.metrics import API_PUBLISH_FAILURES
from notifier.models import Lane, Notification, Status, Wake, utcnow
from notifier.retrying import Backoff, retry
from notifier.settings import Settings
from notifier.store.base import InsertResult, NotificationStore, StoreUnavailable
from notifier.store.batching import MicroBatcher

log = get_logger(__name__)

MAX_ROUNDS_IN_FLIGHT = 4
MAX_ROUND_SIZE = 1000
# Each app's credit per turn, in notifications: one full batch, so a round of 1,000 holds two
# apps' batches, and a batch waits for at most one turn of each other app with work queued.
ROUND_QUANTUM = MAX_BATCH
# every 2 s: /ready answers 503 until the broker is back, so keep trying often
RECONNECT_BACKOFF = Backoff(first_seconds=2.0, max_seconds=2.0)
# A publish the broker did not confirm is tried again this long (a robust connection
# reconnects within about a second after a node is lost, then restores its channel),
# before the documents are left to the sweeper's UNPUBLISHED_GRACE_SECONDS (30 s).
PUBLISH_RETRY_SECONDS = 10.0
PUBLISH_RETRY_BACKOFF = Backoff(first_seconds=0.25, max_seconds=2.0, jitter=0.5)
MARK_PUBLISHED_SECONDS = 0.2
# A replay publishes a stored, never-published pending document this old at once; a younger
# one is re-read when it reaches this age: a live API publishes before it answers and
# records published_at about MARK_PUBLISHED_SECONDS later, so a younger one is most likely
# still on its way (a duplicate wake-up would be harmless, only wasted).
REPLAY_PUBLISH_AFTER_SECONDS = 2.0


class _Closed(Exception):
    """The broker connection was closed by this process: no publish can succeed."""

    def __str__(self) -> str:
        return "broker connection is closed"


class BrokerLink:
    """The API's broker connection; reconnects in the background if it was down at start."""

    def __init__(self, settings: Settings, broker: Broker | None) -> None:
        self.settings = settings
        self.broker = broker
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.broker is None and self._task is None:
            self._task = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        self.broker = await retry(
            lambda: Broker.connect(self.settings, timeout=5.0),
            what="broker",
            backoff=RECONNECT_BACKOFF,
            retry_on=BrokerUnavailable,
            event="connect_failed",
        )
        log.info("broker_connected")

    async def publish(self, wakes: Sequence[Wake]) -> bool:
        """Publish each to its lane's queue, with confirms; False (counted, logged) when the
        broker did not confirm them all.

        A publish left unconfirmed by a lost connection is published again once the robust
        connection is back (to the same node or, in a cluster, another live one), for up
        to ``PUBLISH_RETRY_SECONDS``; the request waits for it. Past that, or with no
        connection at all, the documents stay unpublished and the sweeper publishes them.
        A repeat may duplicate a wake-up whose confirm alone was lost: the claim drops it.
        """
        if not wakes:
            return True
        broker = self.broker

        async def attempt() -> None:
            assert broker is not None
            if broker.connection.is_closed:  # closed for good (shutdown): it never comes back
                raise _Closed
            await broker.publish_wakes(wakes)

        try:
            if broker is None:
                raise BrokerUnavailable("not connected")
            await retry(
                attempt,
                what="publish",
                backoff=PUBLISH_RETRY_BACKOFF,
                retry_on=BrokerUnavailable,
                budget_seconds=PUBLISH_RETRY_SECONDS,
                event="publish_retry",
                log_fields={"count": len(wakes)},
            )
        except (BrokerUnavailable, _Closed) as exc:
            API_PUBLISH_FAILURES.inc(len(wakes))
            log.warning("publish_failed", count=len(wakes), error=str(exc))
            return False
        return True

    async def ping(self) -> None:
        if self.broker is None:
            raise BrokerUnavailable("not connected")
        await self.broker.ping()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.broker is not None:
            await self.broker.close()


_Inserted = list[InsertResult] | Exception


class _Rounds(MicroBatcher[list[Notification], tuple[_Inserted, asyncio.Task[None]]]):
    """Forms the rounds: one inserts at a time, the requests that queue meanwhile form the
    next one (at most ``MAX_ROUND_SIZE`` notifications but for its first request), and no
    round starts while ``MAX_ROUNDS_IN_FLIGHT`` rounds are inserting or publishing. A round
    takes the queued requests of the apps in turn (deficit round robin, ``ROUND_QUANTUM``
    notifications a turn), not in arrival order: a second app's batch joins the next round
    however many batches a campaign queued before it."""

    def __init__(
        self,
        insert: Callable[[list[list[Notification]]], Awaitable[list[_Inserted]]],
        publish: Callable[[list[Wake]], Coroutine[Any, Any, None]],
    ) -> None:
        # one insert in flight, no timer: the round forms while the previous one inserts
        super().__init__(
            max_batch=MAX_ROUND_SIZE,
            max_delay_seconds=0.0,
            max_in_flight=1,
            hold_full_batches=True,
        )
        self._insert = insert
        self._publish = publish
        self._turns: DeficitRoundRobin[str] = DeficitRoundRobin(ROUND_QUANTUM)
        self.publishing: set[asyncio.Task[None]] = set()

    def _weight(self, request: list[Notification]) -> int:
        return len(request)

    def _cut(self) -> list[int]:
        # the apps in turn, by item count: not the queue's order (see api/fairness.py)
        queued = [(r[0].app if r else "", len(r)) for r, _ in self._pending]
        return self._turns.pick(queued, MAX_ROUND_SIZE)

    def _can_send(self) -> bool:
        return super()._can_send() and len(self.publishing) < MAX_ROUNDS_IN_FLIGHT

    async def _run(
        self, requests: list[list[Notification]]
    ) -> list[tuple[_Inserted, asyncio.Task[None]]]:
        outcomes = await self._insert(requests)
        # the next round inserts while this one publishes
        pending = [
            r.notification.wake
            for outcome in outcomes
            if not isinstance(outcome, BaseException)
            for r in outcome
            if r.created and r.notification.status is Status.PENDING
        ]
        task = asyncio.get_running_loop().create_task(self._publish(pending))
        self.publishing.add(task)
        task.add_done_callback(self._published)
        return [(outcome, task) for outcome in outcomes]

    def _published(self, task: asyncio.Task[None]) -> None:
        self.publishing.discard(task)
        self.wake()


class Writer:
    """Groups concurrent writes into rounds of one insert and one publish each, per lane.

    In each lane one round inserts at a time (the requests that queued meanwhile form the
    next round, which starts as soon as the insert ends); up to ``MAX_ROUNDS_IN_FLIGHT``
    rounds wait for their publish confirms at once. The lanes' rounds run side by side.
    """

    def __init__(self, store: NotificationStore, link: BrokerLink) -> None:
        self._store = store
        self._link = link
        self._rounds = {lane: _Rounds(self._insert, self._publish) for lane in Lane}
        self._published: list[str] = []
        self._marker: asyncio.Task[None] | None = None
        self._rechecks: set[asyncio.Task[None]] = set()

    async def write(self, notifications: list[Notification]) -> list[InsertResult]:
        """Store durably and publish; results in input order (see ``insert_many``).

        Not at once: the other handlers woken by the same socket reads run first and join
        this round (one loop turn, no timer). A request with any transactional notification
        goes with the transactional rounds (someone waits for it; the request is not split,
        so it is stored whole or not at all as before), any other with the bulk rounds.
        """
        transactional = any(n.lane is Lane.TRANSACTIONAL for n in notifications)
        rounds = self._rounds[Lane.TRANSACTIONAL if transactional else Lane.BULK]
        outcome, published = await rounds.submit(notifications)
        if isinstance(outcome, BaseException):  # 503 or 500 for this request alone
            raise outcome
        # shielded: a cancelled request must not cancel its round's publish
        await asyncio.shield(published)
        return outcome

    async def _insert(self, batch: list[list[Notification]]) -> list[_Inserted]:
        """Each request's results, or the error that failed it.

        One ``insert_many`` for the whole round; if the store refuses it for any reason but
        being unavailable, each request is written alone, so a request the store refuses
        fails only itself, never the requests (of any app) grouped with it.
        """
        flat = [n for request in batch for n in request]
        try:
            results = await self._store.insert_many(flat)
        except StoreUnavailable as exc:
            return [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("insert_failed", count=len(flat))
                return [exc]
            log.warning(
                "group_insert_failed",
                requests=len(batch),
                count=len(flat),
                error=type(exc).__name__,
            )
            return list(await asyncio.gather(*(self._insert_alone(r) for r in batch)))
        out: list[_Inserted] = []
        start = 0
        for request in batch:
            end = start + len(request)
            out.append(results[start:end])
            start = end
        return out

    async def _insert_alone(self, request: list[Notification]) -> _Inserted:
        try:
            return await self._store.insert_many(request)
        except StoreUnavailable as exc:
            return exc
        except Exception as exc:
            log.exception("insert_failed", count=len(request))
            return exc

    async def _publish(self, pending: list[Wake]) -> None:
        if not pending:
            return
        try:
            if await self._link.publish(pending):
                self._published.extend(w.id for w in pending)
                self._ensure_marker()
        except Exception:  # stored is stored: answer anyway, the sweeper publishes
            log.exception("publish_crashed", count=len(pending))

    async def republish(self, replayed: Sequence[Notification]) -> None:
        """Publish what an idempotent replay found stored but never published.

        The API that stored it died between its insert and its publish; without this the
        client's retry answers 200 and the notification waits for the sweeper's grace
        (30 s). Old enough ones are published before the replay answers; younger ones are
        re-read (in the background) when old enough, and published if still unpublished.
        """
        now = utcnow()
        unpublished = [n for n in replayed if _unpublished(n)]
        ages = {n.wake: (now - n.created_at).total_seconds() for n in unpublished}
        await self._publish([w for w, age in ages.items() if age >= REPLAY_PUBLISH_AFTER_SECONDS])
        young = {w.id: age for w, age in ages.items() if age < REPLAY_PUBLISH_AFTER_SECONDS}
        if young:
            wait = REPLAY_PUBLISH_AFTER_SECONDS - min(young.values())
            task = asyncio.create_task(self._recheck(list(young), wait))
            self._rechecks.add(task)
            task.add_done_callback(self._rechecks.discard)

    @property
    def rechecks_pending(self) -> int:
        """Replays' re-reads still waiting (see :meth:`republish`)."""
        return len(self._rechecks)

    async def _recheck(self, ids: list[str], wait: float) -> None:
        await asyncio.sleep(max(0.0, wait))
        try:
            found = [await self._store.get(id) for id in ids]
        except StoreUnavailable as exc:  # the sweeper publishes them after its grace
            log.warning("replay_recheck_failed", count=len(ids), error=str(exc))
            return
        except Exception:  # a background task: log it here, the sweeper still covers them
            log.exception("replay_recheck_crashed", count=len(ids))
            return
        await self._publish([n.wake for n in found if n is not None and _unpublished(n)])

    def _ensure_marker(self) -> None:
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark_published())

    async def _mark_published(self) -> None:
        await asyncio.sleep(MARK_PUBLISHED_SECONDS)
        await self.flush_published()

    async def flush_published(self) -> None:
        """Record ``published_at`` for what was published (best effort: the sweeper copes)."""
        while self._published:
            ids, self._published = (
                self._published[:MAX_ROUND_SIZE],
                self._published[MAX_ROUND_SIZE:],
            )
            try:
                await self._store.mark_published(ids, utcnow())
            except StoreUnavailable as exc:
                log.warning("mark_published_failed", count=len(ids), error=str(exc))
                return

    async def close(self) -> None:
        """Finish the rounds in flight and record what they published."""
        for task in list(self._rechecks):  # the sweeper covers what they would publish
            task.cancel()
        for rounds in self._rounds.values():
            while not rounds.idle or rounds.publishing:
                await rounds.close()
                await asyncio.gather(*rounds.publishing, return_exceptions=True)
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marker
        await self.flush_published()


def _unpublished(n: Notification) -> bool:
    """Pending, never published and not held by a worker: nobody will wake a worker for it
    before the sweeper's grace."""
    return n.status is Status.PENDING and n.published_at is None and n.locked_by is None
