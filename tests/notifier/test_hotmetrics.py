"""The worker's plain-number metrics export exactly what prometheus_client's would."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from notifier.hotmetrics import LocalCounter, LocalHistogram

BUCKETS = (0.005, 0.01, 0.25, 1, 30)
# on an edge, between edges, below the first, above the last
OBSERVED = (0.005, 0.004, 0.01, 0.0100001, 0.3, 1.0, 29.9, 30, 31, 7200, 0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(line for line in lines if "_created" not in line)


def test_same_exposition_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histograms: tuple[Any, Any] = (
        Histogram("t_seconds", "Help.", ["provider"], buckets=BUCKETS, registry=theirs),
        LocalHistogram("t_seconds", "Help.", ["provider"], ours, buckets=BUCKETS),
    )
    counters: tuple[Any, Any] = (
        Counter("t_events", "Help.", ["provider", "outcome"], registry=theirs),
        LocalCounter("t_events", "Help.", ["provider", "outcome"], ours),
    )
    plain: tuple[Any, Any] = (
        Counter("t_messages", "Help.", registry=theirs),
        LocalCounter("t_messages", "Help.", (), ours),
    )
    for histogram, counter, unlabelled in zip(histograms, counters, plain, strict=True):
        for i, value in enumerate(OBSERVED):
            provider = "apns" if i % 3 else "fcm"
            histogram.labels(provider).observe(value)
            counter.labels(provider=provider, outcome="sent").inc()
            counter.labels(provider, "retry").inc(2)
            unlabelled.inc()
    assert _exposition(ours) == _exposition(theirs)


def test_bad_use_is_refused() -> None:
    registry = CollectorRegistry()
    counter = LocalCounter("u_events", "Help.", ["provider"], registry)
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("fcm").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("fcm", "extra")
    with pytest.raises(ValueError, match="by name"):
        counter.labels(platform="fcm")
