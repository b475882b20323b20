"""Micro-batching: many callers' requests share one store round trip.

A batch is sent when it is full, or a few milliseconds after its first request (timer
mode), or at once while fewer than ``max_in_flight`` batches are in flight and else as soon
as one returns (group commit: no wait when idle, larger batches when busy). Each caller
awaits its own result, set only once the batch's call has returned (so a delivery that
awaits its outcome write acks only after the write is durable); an exception of the batch's
call is raised to every caller of that batch.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from notifier.eventloop import RunningLoop

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class MicroBatcher(ABC, Generic[RequestT, ResultT]):
    """Collects requests and hands each batch to :meth:`_run`."""

    def __init__(self, *, max_batch: int, max_delay_seconds: float, max_in_flight: int = 0) -> None:
        self._max_batch = max_batch
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

    async def _submit(self, request: RequestT) -> ResultT:
        loop = self._loop.get()
        future: asyncio.Future[ResultT] = loop.create_future()
        self._pending.append((request, future))
        self._size += self._weight(request)
        if self._size >= self._max_batch:
            self._flush()
        elif self._timer is None:
            if not self._max_in_flight:
                self._timer = loop.call_later(self._max_delay, self._flush)
            elif len(self._flushes) < self._max_in_flight:
                self._timer = loop.call_soon(self._flush)  # with this iteration's others
        # A cancelled caller cancels only its own future; the batch's call goes on (and
        # skips that future). Not shield(): that costs a second future per request.
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._size = self._pending, [], 0
        task = self._loop.get().create_task(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._max_in_flight and self._pending and self._timer is None:
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
        """Send what is queued and wait for every batch in progress."""
        self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
