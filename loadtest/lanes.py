"""The figures of ``notifier bench --lanes`` (issue 18), computed from raw counts.

Three streams run at once: app A's bulk campaign, app B's smaller bulk submitted shortly
after it, and transactional probes (single POSTs of app A). This module turns the ids each
stream had accepted and the emulator's per-id counts into per-lane figures: the
transactional lane's created -> received latency, the bulk lane's throughput, and app B's
completion time against its fair share of the bulk lane.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.accounting import Deliveries, Latency, created_seconds

# The targets (issue 18, "Deliver" 3).
TRANSACTIONAL_P99_TARGET_MS = 100.0
FAIRNESS_TARGET_RATIO = 2.0


def subtract_counts(total: Mapping[str, int], part: Mapping[str, int]) -> dict[str, int]:
    """Status counts of an app minus those of a subset of its ids (never below zero).

    The probes are app A's single POSTs: the store counts them with the campaign, so the
    campaign's own statuses are the app's minus the probes' (looked up one by one)."""
    out = {status: n - part.get(status, 0) for status, n in total.items()}
    return {status: n for status, n in out.items() if n > 0}


def first_receipts(ids: Sequence[str], deliveries: Deliveries) -> list[float]:
    """The emulator's first-receive time of each of ``ids`` it saw, ascending."""
    times = []
    for nid in ids:
        entry = deliveries.get(nid.lower())
        if entry:
            times.append(float(entry[1]))
    return sorted(times)


def rate_between(receipts: Sequence[float], start: float, end: float) -> float:
    """Receipts per second within ``[start, end]``; NaN for an empty or reversed window."""
    if not end > start:
        return math.nan
    inside = sum(1 for t in receipts if start <= t <= end)
    return inside / (end - start)


@dataclass(frozen=True, slots=True)
class Fairness:
    """How app B fared in the bulk lane while app A's campaign ran.

    With ``apps`` apps sharing a bulk throughput of T notifications/s equally, B's M
    notifications take ``apps * M / T``: its fair share. ``ratio`` is B's completion time
    (its first creation to its last first-receive) over that; the target is <= 2."""

    notifications: int  # B's notifications the emulator received
    completion_seconds: float
    bulk_per_s: float  # both apps' bulk receipts per second during B's window
    fair_share_seconds: float
    ratio: float
    apps: int = 2

    @property
    def met(self) -> bool:
        return self.ratio <= FAIRNESS_TARGET_RATIO

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_ratio": FAIRNESS_TARGET_RATIO, "met": self.met}


def fairness(
    fair_ids: Sequence[str], bulk_ids: Sequence[str], deliveries: Deliveries, apps: int = 2
) -> Fairness:
    """App B's (``fair_ids``) completion against its fair share of all bulk (``bulk_ids``).

    The bulk throughput T is measured over B's own window, when both apps competed: a
    campaign that drains faster or slower outside that window does not move the figure."""
    received = first_receipts(fair_ids, deliveries)
    if not received or not fair_ids:
        nan = math.nan
        return Fairness(0, nan, nan, nan, nan, apps)
    start = min(created_seconds(i) for i in fair_ids)
    end = received[-1]
    throughput = rate_between(first_receipts(bulk_ids, deliveries), start, end)
    fair_share = apps * len(received) / throughput if throughput > 0 else math.nan
    completion = end - start
    ratio = completion / fair_share if fair_share > 0 else math.nan
    return Fairness(len(received), completion, throughput, fair_share, ratio, apps)


def latency_by_phase(
    probe_ids: Sequence[str], deliveries: Deliveries, submitted_at: float
) -> dict[str, Latency]:
    """The probes' created -> received, split at the moment both apps' bulk had been
    accepted: ``submitting`` (the API also taking 500-item batches as fast as it can) and
    ``draining`` (the workers pushing the backlog: the issue's "while the campaign
    drains")."""
    phases: dict[str, list[float]] = {"submitting": [], "draining": []}
    for nid in probe_ids:
        entry = deliveries.get(nid.lower())
        if not entry:
            continue
        created = created_seconds(nid)
        phase = "submitting" if created < submitted_at else "draining"
        phases[phase].append(max(0.0, float(entry[1]) - created))
    return {phase: Latency.of(seconds) for phase, seconds in phases.items()}


def p99_met(p99_ms: float) -> bool:
    """The transactional target: p99 created -> received <= 100 ms (NaN: no probe, not met)."""
    return not math.isnan(p99_ms) and p99_ms <= TRANSACTIONAL_P99_TARGET_MS
