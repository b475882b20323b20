"""The figures of ``notifier bench --tenants``: the healthy apps' latency per window, the
per-credential count check, and its options."""

from __future__ import annotations

import math

import uuid_utils

from loadtest.accounting import Latency
from loadtest.bench_args import check_args as _check_args
from loadtest.bench_args import parser as _parser
from loadtest.tenants import credential_counts, latency_between, latency_figures, ratio

T0 = 1_700_000_000.0


def _ids(count: int, start: float, step: float = 0.01) -> list[str]:
    return [
        str(uuid_utils.uuid7(nanoseconds=round((start + i * step) * 1e9))) for i in range(count)
    ]


def test_latency_between_counts_only_the_ids_created_in_the_window() -> None:
    before, after = _ids(10, T0), _ids(10, T0 + 10)
    deliveries = {i.lower(): [1, T0 + 0.05 + n * 0.01] for n, i in enumerate(before)}
    deliveries |= {i.lower(): [1, T0 + 10.5 + n * 0.01] for n, i in enumerate(after)}
    healthy = latency_between(before + after, deliveries, T0, T0 + 10)
    broken = latency_between(before + after, deliveries, T0 + 10, T0 + 20)
    assert healthy.count == broken.count == 10
    assert math.isclose(healthy.p99_ms, 50, abs_tol=1) and math.isclose(
        broken.p99_ms, 500, abs_tol=1
    )
    figures = latency_figures(healthy, broken)
    assert 9 < figures["p99_ratio"] < 11 and figures["p99_within_2x"] is False
    assert latency_figures(healthy, healthy)["p99_within_2x"] is True
    just_over = Latency(count=1, p50_ms=1.0, p99_ms=2.006)
    assert (
        latency_figures(Latency(count=1, p50_ms=1.0, p99_ms=1.0), just_over)["p99_within_2x"]
        is False
    )


def test_an_empty_window_has_no_ratio() -> None:
    assert math.isnan(ratio(math.nan, 10.0)) and math.isnan(ratio(5.0, 0.0))


def test_credential_counts_match_only_when_each_app_got_exactly_its_own() -> None:
    names = {"a": {"fcm": "pa", "apns": "TA/KA"}, "b": {"fcm": "pb", "apns": "TB/KB"}}
    sent = {"a": {"fcm": 3, "apns": 2}, "b": {"fcm": 4, "apns": 1}}
    before = {"fcm": {"pa": {"accepted": 10}, "default": {"accepted": 7}}, "apns": {}}
    after = {
        "fcm": {"pa": {"accepted": 13}, "pb": {"accepted": 4}, "default": {"accepted": 7}},
        "apns": {"TA/KA": {"accepted": 2}, "TB/KB": {"accepted": 1}},
    }
    counts = credential_counts(sent, names, before, after)
    assert counts["matched"] and counts["under_other_credentials"] == 0
    assert counts["by_app"]["a fcm"] == {"credential": "pa", "sent": 3, "emulator": 3}
    # one of b's pushes went out under the environment's project instead
    after["fcm"]["default"] = {"accepted": 8}
    after["fcm"]["pb"] = {"accepted": 3}
    counts = credential_counts(sent, names, before, after)
    assert not counts["matched"] and counts["under_other_credentials"] == 1


def test_tenants_needs_no_notifications_count_and_checks_its_options() -> None:
    args = _parser().parse_args(["--tenants"])
    assert _check_args(args) is None
    assert "--notifications" in str(_check_args(_parser().parse_args([])))
    bad = _parser().parse_args(["--tenants", "--tenant-rate", "0"])
    assert "--tenant-rate" in str(_check_args(bad))
