"""Grouped claims: the ids of messages that arrive within a couple of milliseconds share one
``claim_many`` round trip (and one commit).

Each caller gets the result for its own ids once the shared ``claim_many`` returned. The
claim time is taken when the group is sent (a won notification's ``locked_at`` tells it). An
id asked for twice in one group (two messages carrying the same wake-up) is won at most once:
the later asker sees it as locked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from notifier.models import utcnow
from notifier.store.base import ClaimMiss, ClaimResult, NotificationStore

_Request = tuple[Sequence[str], "asyncio.Future[dict[str, ClaimResult]]"]


class ClaimBatcher:
    """Collects claim requests and sends them with ``store.claim_many``."""

    def __init__(
        self,
        store: NotificationStore,
        worker_id: str,
        lock_seconds: float,
        *,
        max_batch: int = 200,
        max_delay_seconds: float = 0.002,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._lock_seconds = lock_seconds
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._pending: list[_Request] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def claim(self, ids: Sequence[str]) -> dict[str, ClaimResult]:
        """Claim ``ids`` (with others' ids); raises what ``claim_many`` raised for the group."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, ClaimResult]] = loop.create_future()
        self._pending.append((ids, future))
        self._size += len(ids)
        if self._size >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_delay, self._flush)
        # shield: a cancelled caller must not cancel the claim others share (its wins are
        # then left locked: the lock expires and the sweeper recovers them, as on a crash)
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._size = self._pending, [], 0
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[_Request]) -> None:
        ids = list(dict.fromkeys(i for request_ids, _ in batch for i in request_ids))
        try:
            results = await self._store.claim_many(
                ids, self._worker_id, utcnow(), self._lock_seconds
            )
        except BaseException as exc:  # handed to every waiting caller, which decides
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        handed: set[str] = set()
        for request_ids, future in batch:
            mine: dict[str, ClaimResult] = {}
            for nid in request_ids:
                if nid in mine:
                    continue
                result = results.get(nid, ClaimResult(None, ClaimMiss.MISSING))
                if nid in handed and result.won:
                    result = ClaimResult(None, ClaimMiss.LOCKED)  # the first asker has it
                handed.add(nid)
                mine[nid] = result
            if not future.done():
                future.set_result(mine)

    async def close(self) -> None:
        """Send what is queued and wait for every claim in progress."""
        self._flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
