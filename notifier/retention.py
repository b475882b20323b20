"""Retention: ``notifier prune`` deletes final notifications older than a number of days.

The store keeps every notification until then: its status, attempt history and
idempotency key (a replay of a pruned key creates a new notification). Open ones
(pending, scheduled, retrying) are never pruned, whatever their age. Rounds of ``batch``
rows keep each transaction and its locks short, so workers and the API run on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from notifier.models import utcnow
from notifier.settings import Settings

DEFAULT_BATCH = 5000


async def prune(
    settings: Settings,
    older_than: timedelta,
    *,
    batch: int = DEFAULT_BATCH,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete final notifications created and last updated more than ``older_than`` ago;
    the number deleted. ``progress`` is called with the running total after each round."""
    if older_than <= timedelta(0) or batch < 1:
        raise ValueError("prune needs a positive age and batch size")
    from notifier.store import open_store

    before = (now or utcnow()) - older_than
    store = await open_store(settings)
    try:
        total = 0
        while True:
            deleted = await store.delete_final(before, limit=batch)
            total += deleted
            if progress is not None and deleted:
                progress(total)
            if deleted < batch:
                return total
    finally:
        await store.close()
