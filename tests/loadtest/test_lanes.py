"""The figures of ``notifier bench --lanes``: per-lane accounting and app B's fair share."""

from __future__ import annotations

import argparse
import math

import uuid_utils

from loadtest.accounting import created_seconds
from loadtest.bench_args import check_args as _check_args
from loadtest.bench_args import parser as _parser
from loadtest.driver import SubmitStats
from loadtest.lanes import fairness, latency_by_phase, p99_met, rate_between, subtract_counts
from loadtest.lanes_bench import Streams, lane_figures, lane_payloads
from notifier.models import Lane

T0 = 1_700_000_000.0


def _ids(count: int, start: float, step: float = 0.001) -> list[str]:
    return [
        str(uuid_utils.uuid7(nanoseconds=round((start + i * step) * 1e9))) for i in range(count)
    ]


def _received(ids: list[str], at: list[float], count: int = 1) -> dict[str, list[float]]:
    return {nid.lower(): [count, t] for nid, t in zip(ids, at, strict=True)}


def test_subtract_counts_removes_the_probes_from_their_apps_counts() -> None:
    assert subtract_counts({"sent": 100, "failed": 2}, {"sent": 10}) == {"sent": 90, "failed": 2}
    # a status only the part had (or fully taken) does not appear, never negative
    assert subtract_counts({"sent": 5}, {"sent": 5, "pending": 1}) == {}


def test_rate_counts_receipts_inside_the_window_only() -> None:
    assert rate_between([1.0, 2.0, 3.0, 9.0], 1.0, 3.0) == 1.5
    assert math.isnan(rate_between([1.0], 2.0, 2.0))


def test_fair_share_is_twice_the_apps_count_over_the_bulk_throughput() -> None:
    # B: 100 notifications created at T0 + 10 s, all received within 4 s; 1,200 of A's
    # campaign are received in the same window: 1,300 bulk receipts in 4 s = 325/s.
    fair = _ids(100, T0 + 10.0)
    start = created_seconds(fair[0])
    campaign = _ids(3000, T0)
    deliveries = {
        **_received(fair, [start + 4.0 * (i + 1) / 100 for i in range(100)]),
        # 1,200 of A's inside B's window, the rest long after it
        **_received(campaign[:1200], [start + 4.0 * i / 1200 for i in range(1200)]),
        **_received(campaign[1200:], [start + 10.0] * 1800),
    }
    result = fairness(fair, campaign + fair, deliveries)
    assert result.notifications == 100
    assert math.isclose(result.completion_seconds, 4.0, abs_tol=1e-3)
    assert math.isclose(result.bulk_per_s, 1300 / 4.0, rel_tol=1e-3)
    # fair share: 2 apps x 100 / 325 per s = 0.615 s; B took 4 s: 6.5x, target missed
    assert math.isclose(result.fair_share_seconds, 200 / 325, rel_tol=1e-3)
    assert math.isclose(result.ratio, 4.0 / (200 / 325), rel_tol=1e-3)
    assert not result.met
    assert result.to_dict()["target_ratio"] == 2.0


def test_fairness_is_met_when_b_gets_half_the_lane() -> None:
    # B's 100 and A's 100 alternate over 1 s: B finishes in 1 s, its fair share 2 x 100 / 200
    fair, campaign = _ids(100, T0), _ids(100, T0)
    start = created_seconds(fair[0])
    deliveries = {
        **_received(fair, [start + (2 * i + 2) / 200 for i in range(100)]),
        **_received(campaign, [start + (2 * i + 1) / 200 for i in range(100)]),
    }
    result = fairness(fair, campaign + fair, deliveries)
    assert math.isclose(result.ratio, 1.0, rel_tol=1e-3)
    assert result.met


def test_fairness_without_any_receipt_of_b_is_not_met() -> None:
    result = fairness(_ids(3, T0), [], {})
    assert result.notifications == 0 and math.isnan(result.ratio) and not result.met


def test_transactional_target_is_p99_within_100_ms() -> None:
    assert p99_met(100.0) and not p99_met(100.1) and not p99_met(math.nan)


def test_lane_figures_account_each_lane_and_sum_the_losses() -> None:
    campaign, fair, probes = _ids(4, T0), _ids(2, T0 + 1), _ids(3, T0 + 0.5)
    at = created_seconds(campaign[0])
    deliveries = {
        **_received(campaign[:3], [at + 1, at + 2, at + 3]),  # the 4th is still pending
        **_received(fair, [at + 2.5, at + 3.0], count=2),  # both pushed twice
        **_received(probes, [at + 0.52, at + 0.53, at + 0.54]),
    }
    streams = Streams(SubmitStats(ids=campaign), SubmitStats(ids=fair), SubmitStats(ids=probes))
    # app A's counts include its probes; app B's are its own
    counts = ({"sent": 6, "pending": 1}, {"sent": 2})
    figures = lane_figures(streams, deliveries, counts, {"sent": 3})
    tx, bulk = figures["transactional"], figures["bulk"]
    assert (tx["accepted"], tx["received"], tx["lost"], tx["duplicates"]) == (3, 3, 0, 0)
    assert round(tx["latency"]["p99_ms"]) == 38 and tx["p99_met"]
    assert bulk["campaign"]["statuses"] == {"sent": 3, "pending": 1}
    assert (bulk["campaign"]["lost"], bulk["fair_app"]["duplicates"]) == (1, 2)
    assert (bulk["accepted"], bulk["received"], bulk["lost"], bulk["duplicates"]) == (6, 5, 1, 2)
    assert (figures["lost"], figures["duplicates"]) == (1, 2)
    assert figures["fairness"]["notifications"] == 2


def test_payloads_send_the_lane_only_when_asked() -> None:
    (plain,) = lane_payloads(1, None)
    assert "lane" not in plain and "priority" not in plain
    (probe,) = lane_payloads(1, Lane.TRANSACTIONAL, probe=True)
    assert probe["lane"] == "transactional" and probe["priority"] == "high"


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["--notifications", "100", "--lanes", *argv])


def test_lanes_arguments_default_to_the_issues_measurement() -> None:
    args = _args()
    assert _check_args(args) is None
    assert (args.fair_app_notifications, args.probe_interval) == (1000, 0.25)


def test_lanes_refuse_a_campaign_of_single_posts_without_explicit_lanes() -> None:
    # a single POST defaults to the transactional lane: the "campaign" would not be bulk
    assert "--lanes needs batches" in str(_check_args(_args("--batch-size", "1")))
    assert _check_args(_args("--batch-size", "1", "--explicit-lanes")) is None
    assert "--probe-interval" in str(_check_args(_args("--probe-interval", "0")))


def test_probe_latency_is_split_at_the_end_of_the_bulk_submission() -> None:
    """Probes created before both apps' bulk was accepted count as "while submitting", the
    others as "while draining" (the issue's target); unreceived probes in neither."""
    early, late = _ids(2, T0), _ids(3, T0 + 10)
    e, la = [created_seconds(i) for i in early], [created_seconds(i) for i in late]
    deliveries = {
        **_received(early, [e[0] + 0.300, e[1] + 0.400]),
        **_received(late[:2], [la[0] + 0.020, la[1] + 0.030]),
    }
    phases = latency_by_phase(early + late, deliveries, submitted_at=T0 + 5)
    assert phases["submitting"].count == 2 and round(phases["submitting"].p99_ms) == 400
    assert phases["draining"].count == 2 and round(phases["draining"].p99_ms) == 30
