"""Delivery accounting of bench and locust: lost, duplicates and latency from raw counts."""

from __future__ import annotations

import math

import uuid_utils

from loadtest.accounting import account, created_seconds, percentile, statuses_from_deliveries


def test_created_time_comes_from_the_uuid7_clock() -> None:
    nid = str(uuid_utils.uuid7(nanoseconds=1_700_000_000_123_000_000))
    assert created_seconds(nid) == 1_700_000_000.123


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_lost_and_duplicates_are_counted_per_accepted_id() -> None:
    ids = [
        str(uuid_utils.uuid7(nanoseconds=1_700_000_000_000_000_000 + i * 1_000_000))
        for i in range(4)
    ]
    base = created_seconds(ids[0])
    deliveries = {
        ids[0].lower(): [1, base + 0.010],
        ids[1].lower(): [3, base + 0.021],  # pushed three times: two duplicates
        ids[2].lower(): [1, base + 0.032],
        "someone-elses-id": [5, base],
    }
    report = account(ids, deliveries, {"sent": 3, "pending": 1})
    assert report.accepted == 4
    assert report.received == 3
    assert report.duplicates == 2
    assert report.sent == 3
    assert report.lost == 1
    assert round(report.latency.p50_ms) == 20
    assert round(report.latency.max_ms) == 30


def test_statuses_from_deliveries_take_seen_ids_as_sent() -> None:
    counts = statuses_from_deliveries(["a", "b", "c"], {"a": [1, 0.0]}, {"b": "failed"})
    assert counts == {"sent": 1, "failed": 1, "pending": 1}
