"""Provider latency profiles: how long the emulator waits before it answers a push.

Real FCM and APNs answer in tens of milliseconds; the emulator answers in microseconds, so
a benchmark against it says nothing about how many pushes a worker must keep in flight.
A profile gives each platform a fixed delay plus jitter: every push answer waits
``min_ms + uniform(0, max_ms - min_ms)`` milliseconds, that is uniform in
``[min_ms, max_ms]`` (``random.uniform``), drawn per request. The wait is an
``asyncio.sleep`` in the request's own task: it never blocks the event loop, and the
streams of one connection overlap as they would at Google or Apple.

Only push answers wait (APNs ``/3/device/...``, FCM ``messages:send``), never the OAuth2
token endpoint nor the control API: a worker fetches an access token once an hour, so its
latency would only slow the first push, and a slow control API would slow the tests.

Text form (``notifier emulator --latency``, ``notifier bench --provider-latency``):
``fcm=30-60,apns=20-80`` (milliseconds; ``fcm=50`` is a fixed 50 ms), ``real`` for that
example, ``none`` (or ``0``) for no delay. A platform left out answers at once.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLATFORMS = ("fcm", "apns")
MAX_MS = 60_000  # a minute: beyond any provider timeout worth emulating
DISTRIBUTION = "uniform"
PRESETS = {"real": "fcm=30-60,apns=20-80", "none": "", "0": ""}


@dataclass(frozen=True, slots=True)
class DelayRange:
    """A fixed delay of ``min_ms`` plus a jitter of up to ``max_ms - min_ms``."""

    min_ms: int
    max_ms: int

    def __post_init__(self) -> None:
        if not 0 <= self.min_ms <= self.max_ms <= MAX_MS:
            raise ValueError(f"delays must satisfy 0 <= min_ms <= max_ms <= {MAX_MS}")

    def draw(self) -> float:
        """One delay, in seconds."""
        if self.max_ms == self.min_ms:
            return self.min_ms / 1000
        return random.uniform(self.min_ms, self.max_ms) / 1000

    def __str__(self) -> str:
        return str(self.min_ms) if self.min_ms == self.max_ms else f"{self.min_ms}-{self.max_ms}"


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """A delay range per platform; a platform without one answers at once."""

    ranges: Mapping[str, DelayRange]

    @classmethod
    def none(cls) -> LatencyProfile:
        return cls({})

    @classmethod
    def parse(cls, text: str) -> LatencyProfile:
        """``fcm=30-60,apns=20-80``, ``fcm=50``, ``real`` or ``none``; ``ValueError`` names
        the fault."""
        text = PRESETS.get(text.strip().lower(), text)
        ranges: dict[str, DelayRange] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            platform, sep, span = part.partition("=")
            platform = platform.strip().lower()
            if not sep or platform not in PLATFORMS:
                raise ValueError(f"{part!r}: expected PLATFORM=MS or PLATFORM=MIN-MAX ({_KNOWN})")
            if platform in ranges:
                raise ValueError(f"{platform} is given twice")
            low, _, high = span.partition("-")
            if not low.strip().isdigit() or not (high or low).strip().isdigit():
                raise ValueError(f"{part!r}: delays are whole milliseconds, MIN-MAX")
            ranges[platform] = DelayRange(int(low), int(high or low))
        return cls(ranges)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> LatencyProfile:
        """``{"fcm": {"min_ms": 30, "max_ms": 60}, ...}`` or ``{"profile": "fcm=30-60"}``."""
        if "profile" in body:
            if set(body) != {"profile"} or not isinstance(body["profile"], str):
                raise ValueError("profile must be a string, alone")
            return cls.parse(body["profile"])
        unknown = set(body) - set(PLATFORMS)
        if unknown:
            raise ValueError(f"unknown platform {sorted(unknown)[0]!r} ({_KNOWN})")
        ranges: dict[str, DelayRange] = {}
        for platform, value in body.items():
            if not isinstance(value, dict) or set(value) - {"min_ms", "max_ms"}:
                raise ValueError(f"{platform} must be an object with min_ms and max_ms")
            low, high = value.get("min_ms"), value.get("max_ms", value.get("min_ms"))
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
                raise ValueError(f"{platform}: min_ms and max_ms must be whole milliseconds")
            assert isinstance(low, int) and isinstance(high, int)
            ranges[platform] = DelayRange(low, high)
        return cls(ranges)

    def delay(self, platform: str) -> float:
        """Seconds to wait before answering a push of ``platform`` (0.0 without a range)."""
        span = self.ranges.get(platform)
        return 0.0 if span is None else span.draw()

    def to_json(self) -> dict[str, Any]:
        ranges = {p: {"min_ms": r.min_ms, "max_ms": r.max_ms} for p, r in self.ranges.items()}
        return {**ranges, "profile": str(self), "distribution": DISTRIBUTION}

    def __bool__(self) -> bool:
        return any(r.max_ms for r in self.ranges.values())

    def __str__(self) -> str:
        parts = [f"{p}={self.ranges[p]}" for p in PLATFORMS if p in self.ranges]
        return ",".join(parts) or "none"


_KNOWN = "platforms: " + ", ".join(PLATFORMS)
