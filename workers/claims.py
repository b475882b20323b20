"""Grouped claims: the ids of messages that arrive within a couple of milliseconds share one
``claim_many`` round trip (and one commit).

Each caller gets the result for its own ids once the shared ``claim_many`` returned. The
claim time is taken when the group is sent (a won notification's ``locked_at`` tells it). An
id asked for twice in one group (two messages carrying the same wake-up) is won at most once:
the later asker sees it as locked.
"""

from __future__ import annotations

from collections.abc import Sequence

from notifier.models import utcnow
from notifier.store.base import MISSING, ClaimMiss, ClaimResult, NotificationStore
from workers.batching import MicroBatcher


class ClaimBatcher(MicroBatcher[Sequence[str], dict[str, ClaimResult]]):
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
        super().__init__(max_batch=max_batch, max_delay_seconds=max_delay_seconds)
        self._store = store
        self._worker_id = worker_id
        self._lock_seconds = lock_seconds

    async def claim(self, ids: Sequence[str]) -> dict[str, ClaimResult]:
        """Claim ``ids`` (with others' ids); raises what ``claim_many`` raised for the group.

        A cancelled caller does not cancel the shared claim: its wins are then left locked,
        and the lock expires and the sweeper recovers them, as on a crash.
        """
        return await self._submit(ids)

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
