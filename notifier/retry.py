"""Retry timing: exponential backoff with full jitter, capped, never sooner than Retry-After.

Re-attempts are scheduled in the store (``next_attempt_at``) and republished by the sweeper,
so they survive restarts; nothing here sleeps.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from notifier.settings import Settings


def backoff_seconds(
    attempt: int,
    *,
    base_seconds: float,
    max_seconds: float,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next attempt, after ``attempt`` attempts (1-based) have failed.

    Full jitter (AWS architecture blog): uniform in ``[0, min(cap, base * 2**(attempt-1))]``.
    The provider's ``Retry-After`` is a floor: the result is never below it (nor above the
    larger of the cap and that floor).
    """
    exponent = max(0, min(attempt - 1, 60))
    ceiling = min(max_seconds, base_seconds * (2.0**exponent))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after_seconds is not None and retry_after_seconds > delay:
        delay = retry_after_seconds
    return delay


def next_attempt_at(
    now: datetime,
    attempt: int,
    settings: Settings,
    retry_after_seconds: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """When the next attempt may start, from the retry settings."""
    delay = backoff_seconds(
        attempt,
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
        retry_after_seconds=retry_after_seconds,
        rng=rng,
    )
    return now + timedelta(seconds=delay)
