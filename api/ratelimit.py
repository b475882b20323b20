"""Per-API-key token buckets: ``rate`` tokens a second, up to ``burst`` saved up."""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """In-process token buckets keyed by API key hash (each replica limits on its own)."""

    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate = rate_per_second
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take ``cost`` tokens: 0.0 when allowed, else the seconds until it would be."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate
