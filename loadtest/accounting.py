"""Delivery-side accounting shared by ``notifier bench`` and the locust load test.

Given the ids the API accepted, the emulator's per-id counts (``{id: [count,
first_received_at]}`` by the emulator's clock) and the final statuses, it answers: how many
were sent, failed, still open (lost, once the drain timed out), pushed twice (duplicates),
and the created -> received latency percentiles (created = the UUIDv7's millisecond clock).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from notifier.models import FINAL_STATUSES, OPEN_STATUSES, Status

Deliveries = Mapping[str, Sequence[float]]


def created_seconds(notification_id: str) -> float:
    """The creation time carried by a UUIDv7 (its first 48 bits: Unix milliseconds)."""
    return int(notification_id.replace("-", "")[:12], 16) / 1000.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100); NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class Latency:
    """Created -> first received at the emulator, in milliseconds."""

    count: int = 0
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Latency:
        values = sorted(s * 1000.0 for s in seconds)
        if not values:
            return cls()
        return cls(
            count=len(values),
            p50_ms=percentile(values, 50),
            p95_ms=percentile(values, 95),
            p99_ms=percentile(values, 99),
            max_ms=values[-1],
        )


@dataclass(slots=True)
class DeliveryReport:
    """What happened to the accepted notifications, read after the drain."""

    accepted: int
    received: int  # distinct ids the emulator counted
    duplicates: int  # pushes beyond the first, summed over our ids
    statuses: dict[str, int] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)
    first_created: float = math.nan
    last_received: float = math.nan

    @property
    def sent(self) -> int:
        return self.statuses.get(Status.SENT.value, 0)

    @property
    def failed(self) -> int:
        return self.statuses.get(Status.FAILED.value, 0)

    @property
    def final(self) -> int:
        return sum(self.statuses.get(s.value, 0) for s in FINAL_STATUSES)

    @property
    def lost(self) -> int:
        """Accepted but not final after the drain: still open (or not found at all).

        ``statuses`` cover at least our accepted ids (the bench counts its own app), so
        an open status anywhere there is a notification that did not finish in time.
        """
        still_open = sum(self.statuses.get(s.value, 0) for s in OPEN_STATUSES)
        missing = max(0, self.accepted - sum(self.statuses.values()))
        return still_open + missing

    @property
    def delivery_seconds(self) -> float:
        """First creation to last first-receive: the window the deliveries took."""
        return self.last_received - self.first_created

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(sent=self.sent, failed=self.failed, lost=self.lost)
        return out


def account(
    ids: Sequence[str], deliveries: Deliveries, statuses: Mapping[str, int]
) -> DeliveryReport:
    """Join our accepted ids with the emulator's counts and the final status counts."""
    latencies: list[float] = []
    duplicates = 0
    last_received = -math.inf
    for nid in ids:
        entry = deliveries.get(nid.lower())
        if not entry:
            continue
        count, first = int(entry[0]), float(entry[1])
        duplicates += max(0, count - 1)
        latencies.append(max(0.0, first - created_seconds(nid)))
        last_received = max(last_received, first)
    first_created = min((created_seconds(i) for i in ids), default=math.nan)
    return DeliveryReport(
        accepted=len(ids),
        received=len(latencies),
        duplicates=duplicates,
        statuses=dict(statuses),
        latency=Latency.of(latencies),
        first_created=first_created,
        last_received=last_received if latencies else math.nan,
    )


def statuses_from_deliveries(
    ids: Sequence[str], deliveries: Deliveries, looked_up: Mapping[str, str]
) -> dict[str, int]:
    """Status counts when only the ids the emulator never saw were looked up by GET.

    An id the emulator counted is taken as ``sent``; ``looked_up`` holds the status the API
    reported for the others (absent: unknown, counted as ``pending``).
    """
    counts: dict[str, int] = {}
    for nid in ids:
        status = "sent" if nid.lower() in deliveries else looked_up.get(nid, "pending")
        counts[status] = counts.get(status, 0) + 1
    return counts


def format_report(report: DeliveryReport) -> list[str]:
    """Plain lines for logs and the locust run's end."""
    lat = report.latency
    return [
        f"accepted {report.accepted}  sent {report.sent}  failed {report.failed}  "
        f"lost {report.lost}  duplicates {report.duplicates}  received {report.received}",
        f"created->received ms: p50 {lat.p50_ms:.1f}  p95 {lat.p95_ms:.1f}  "
        f"p99 {lat.p99_ms:.1f}  max {lat.max_ms:.1f}  (n={lat.count})",
    ]
