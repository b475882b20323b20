"""Batched outcome writes: many deliveries' ``complete`` calls share one store round trip.

Each caller awaits its own result, which arrives only after the batch's ``complete_many``
has returned (durable): a delivery therefore still acks its message only after its outcome
is stored. A batch flushes when it is full or a few milliseconds after its first item.
"""

from __future__ import annotations

import asyncio

from notifier.logging import get_logger
from notifier.store.base import NotificationStore, Outcome

log = get_logger(__name__)


class OutcomeBatcher:
    """Collects ``(id, outcome)`` pairs and writes them with ``store.complete_many``."""

    def __init__(
        self,
        store: NotificationStore,
        worker_id: str,
        *,
        max_batch: int = 200,
        max_delay_seconds: float = 0.003,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._pending: list[tuple[str, Outcome, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def complete(self, notification_id: str, outcome: Outcome) -> bool:
        """Queue one outcome; return once it is durable (True) or fenced off (False).

        Raises what ``complete_many`` raised (:class:`StoreUnavailable`) for its batch.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((notification_id, outcome, future))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_delay, self._flush)
        # shield: a cancelled delivery must not cancel the write the batch shares
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[tuple[str, Outcome, asyncio.Future[bool]]]) -> None:
        # in id order: concurrent multi-row updates then lock rows in one order (no deadlock)
        batch.sort(key=lambda item: item[0])
        items = [(nid, outcome) for nid, outcome, _ in batch]
        try:
            results = await self._store.complete_many(self._worker_id, items)
        except BaseException as exc:  # handed to every waiting delivery, which decides
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, _, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)

    async def close(self) -> None:
        """Write what is queued and wait for every write in progress."""
        self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
