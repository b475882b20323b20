"""Micro-batching of store calls: many callers' requests share one store round trip.

:class:`MicroBatcher` groups requests; :class:`BatchedStore` uses it to give a worker's
deliveries ``claim`` and ``complete`` calls that the store receives as ``claim_many`` and
``complete_many`` (the API's writer groups its inserts with the same batcher).

A batch is sent when it is full, or a few milliseconds after its first request (timer
mode), or at once while fewer than ``max_in_flight`` batches are in flight and else as soon
as one returns (group commit: no wait when idle, larger batches when busy). With
``hold_full_batches`` the in-flight limit binds full batches too, and a batch never takes
more than ``max_batch`` (but for its first request): the rest wait for the next one. Each caller
awaits its own result, set only once the batch's call has returned (so a delivery that
awaits its outcome write acks only after the write is durable); an exception of the batch's
call is raised to every caller of that batch.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeVar

from notifier.eventloop import RunningLoop
from notifier.models import utcnow
from notifier.store.base import MISSING, ClaimMiss, ClaimResult, NotificationStore, Outcome

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class MicroBatcher(ABC, Generic[RequestT, ResultT]):
    """Collects requests and hands each batch to :meth:`_run`."""

    def __init__(
        self,
        *,
        max_batch: int,
        max_delay_seconds: float,
        max_in_flight: int = 0,
        hold_full_batches: bool = False,
    ) -> None:
        self._max_batch = max_batch
        self._hold_full = hold_full_batches
        self._max_delay = max_delay_seconds
        # Group commit when > 0: a batch goes at once while fewer than this are in flight,
        # else when one of them returns (no timer); 0: a timer of max_delay_seconds.
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[RequestT, asyncio.Future[ResultT]]] = []
        self._size = 0
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._loop = RunningLoop()

    @abstractmethod
    async def _run(self, requests: list[RequestT]) -> list[ResultT]:
        """One store call for the whole batch; results in request order."""

    def _weight(self, request: RequestT) -> int:
        """How much of ``max_batch`` one request takes."""
        return 1

    def _cut(self) -> list[int]:
        """With ``hold_full_batches``: the positions in the queue of the requests that form
        the next batch (at most ``max_batch`` but for its first request). In arrival order
        here; a subclass may choose otherwise (the API's writer takes the apps in turn)."""
        cut, size = 0, 0
        for request, _ in self._pending:
            weight = self._weight(request)
            if cut and size + weight > self._max_batch:
                break
            cut, size = cut + 1, size + weight
        return list(range(cut))

    def _can_send(self) -> bool:
        """Whether a group-commit batch may go now."""
        return len(self._flushes) < self._max_in_flight

    async def submit(self, request: RequestT) -> ResultT:
        loop = self._loop.get()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((request, future))
        self._size += self._weight(request)
        if self._size >= self._max_batch and (not self._hold_full or self._can_send()):
            self._flush()
        elif self._timer is None:
            if not self._max_in_flight:
                self._timer = loop.call_later(self._max_delay, self._flush)
            elif self._can_send():
                self._timer = loop.call_soon(self._flush)  # with this iteration's others
        # A cancelled caller cancels only its own future; the batch's call goes on (and
        # skips that future). Not shield(): that costs a second future per request.
        return await future

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight."""
        return not self._pending and not self._flushes

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        if self._hold_full:
            if not self._can_send():
                return  # the next wake() sends it
            chosen = set(self._cut())
            batch = [p for i, p in enumerate(self._pending) if i in chosen]
            self._pending = [p for i, p in enumerate(self._pending) if i not in chosen]
            self._size -= sum(self._weight(request) for request, _ in batch)
        else:
            batch, self._pending, self._size = self._pending, [], 0
        task = self._loop.get().create_task(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushed)
        if self._hold_full:
            self.wake()

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._hold_full:
            self.wake()
        elif self._max_in_flight and self._pending and self._timer is None:
            self._timer = self._loop.get().call_soon(self._flush)

    def wake(self) -> None:
        """Send what waits if a batch may go now (call it when :meth:`_can_send` changed)."""
        if self._max_in_flight and self._pending and self._timer is None and self._can_send():
            self._timer = self._loop.get().call_soon(self._flush)

    async def _send(self, batch: list[tuple[RequestT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except BaseException as exc:  # handed to every waiting caller, which decides
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Send what is queued (as far as batches may go) and wait for every batch sent."""
        self._flush()
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
            self._flush()


class _ClaimBatcher(MicroBatcher[Sequence[str], dict[str, ClaimResult]]):
    """Claims of messages that arrive within a couple of milliseconds share one
    ``claim_many`` round trip (and one commit).

    The claim time is taken when the group is sent (a won notification's ``locked_at``
    tells it). An id asked for twice in one group (two messages carrying the same wake-up)
    is won at most once: the later asker sees it as locked.
    """

    def __init__(
        self,
        store: NotificationStore,
        worker_id: str,
        lock_seconds: float,
        *,
        max_batch: int,
        max_delay_seconds: float,
    ) -> None:
        super().__init__(max_batch=max_batch, max_delay_seconds=max_delay_seconds)
        self._store = store
        self._worker_id = worker_id
        self._lock_seconds = lock_seconds

    def _weight(self, request: Sequence[str]) -> int:
        return len(request)

    async def _run(self, requests: list[Sequence[str]]) -> list[dict[str, ClaimResult]]:
        ids = list(dict.fromkeys(i for request_ids in requests for i in request_ids))
        results = await self._store.claim_many(ids, self._worker_id, utcnow(), self._lock_seconds)
        handed: set[str] = set()
        answers: list[dict[str, ClaimResult]] = []
        for request_ids in requests:
            mine: dict[str, ClaimResult] = {}
            for nid in request_ids:
                if nid in mine:
                    continue
                result = results.get(nid, MISSING)
                if nid in handed and result.won:
                    result = ClaimResult(None, ClaimMiss.LOCKED)  # the first asker has it
                handed.add(nid)
                mine[nid] = result
            answers.append(mine)
        return answers


class _OutcomeBatcher(MicroBatcher[tuple[str, Outcome], bool]):
    """Outcome writes by group commit: a batch goes at once while fewer than
    ``max_in_flight`` are in flight, else when one returns, so an outcome waits for no timer.

    That narrows the crash window (provider answered, outcome not yet stored), which a
    3 ms timer had set at 3 to 5 ms even when idle.
    """

    def __init__(
        self, store: NotificationStore, worker_id: str, *, max_batch: int, max_in_flight: int
    ) -> None:
        # group commit has no timer: the delay is never used
        super().__init__(max_batch=max_batch, max_delay_seconds=0.0, max_in_flight=max_in_flight)
        self._store = store
        self._worker_id = worker_id

    async def _run(self, requests: list[tuple[str, Outcome]]) -> list[bool]:
        # in id order: concurrent multi-row updates then lock rows in one order (no deadlock)
        order = sorted(range(len(requests)), key=lambda i: requests[i][0])
        written = await self._store.complete_many(self._worker_id, [requests[i] for i in order])
        results = [False] * len(requests)
        for i, ok in zip(order, written, strict=True):
            results[i] = ok
        return results


class BatchedStore:
    """One worker's access to the store for its deliveries, claims and outcomes grouped.

    Claims and outcome writes are made for ``worker_id`` (the lock holder); everything
    else goes to the store unchanged. Close it (or leave its ``async with``) after the
    deliveries ended, to send what is queued; that does not close the store.
    """

    def __init__(
        self,
        store: NotificationStore,
        worker_id: str,
        lock_seconds: float,
        *,
        max_claim_batch: int = 200,
        claim_delay_seconds: float = 0.002,
        max_outcome_batch: int = 200,
        max_outcome_batches_in_flight: int = 2,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self._claims = _ClaimBatcher(
            store,
            worker_id,
            lock_seconds,
            max_batch=max_claim_batch,
            max_delay_seconds=claim_delay_seconds,
        )
        self._outcomes = _OutcomeBatcher(
            store,
            worker_id,
            max_batch=max_outcome_batch,
            max_in_flight=max_outcome_batches_in_flight,
        )

    async def claim(self, ids: Sequence[str]) -> dict[str, ClaimResult]:
        """Claim ``ids`` (with others' ids); raises what ``claim_many`` raised for the group.

        A cancelled caller does not cancel the shared claim: its wins are then left locked,
        and the lock expires and the sweeper recovers them, as on a crash.
        """
        return await self._claims.submit(ids)

    async def complete(self, notification_id: str, outcome: Outcome) -> bool:
        """Queue one outcome; return once it is durable (True) or fenced off (False).

        Raises what ``complete_many`` raised (:class:`StoreUnavailable`) for its batch.
        """
        return await self._outcomes.submit((notification_id, outcome))

    async def deactivate_device(
        self,
        app: str,
        token: str,
        reason: str,
        now: datetime,
        *,
        unless_registered_after: datetime | None = None,
    ) -> bool:
        """The store's ``deactivate_device`` (rare: not batched)."""
        return await self.store.deactivate_device(
            app, token, reason, now, unless_registered_after=unless_registered_after
        )

    async def __aenter__(self) -> BatchedStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Send the queued claims and outcomes and wait for every batch in progress."""
        await self._claims.close()
        await self._outcomes.close()
