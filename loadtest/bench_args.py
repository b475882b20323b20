"""``notifier bench``'s options and their checks (``loadtest/bench.py`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loadtest.latency import check_profile
from loadtest.tenants import add_arguments as add_tenant_arguments
from loadtest.tenants import check_arguments as check_tenant_arguments

_DESCRIPTION = "End-to-end throughput, latency, duplicates and losses on a running stack."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="notifier bench", description=_DESCRIPTION)
    p.add_argument("--notifications", type=int, help="how many to submit (not with --tenants)")
    p.add_argument("--workers", type=int, help="scale the stack's workers to W first")
    p.add_argument("--rate", type=float, help="submit at R notifications/s (default: max)")
    p.add_argument(
        "--kill-worker-every", type=float, metavar="S", help="SIGKILL a worker every S s"
    )
    p.add_argument(
        "--batch-size", type=int, help="items per request (default 500; with --rate, R/20)"
    )
    p.add_argument("--connections", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("--json", type=Path, help="summary JSON path (default: in the run folder)")
    p.add_argument("--run-dir", default=".run/stack", help="the stack's run folder")
    p.add_argument(
        "--provider-latency",
        metavar="PROFILE",
        help="the emulator delays push answers for the run: fcm=30-60,apns=20-80 (ms, "
        "uniform), real (that), none; restored after",
    )
    grown = p.add_argument_group("a grown store (issue 17: cost as the store grows)")
    grown.add_argument(
        "--preload",
        type=int,
        metavar="N",
        help="first add N final notifications of realistic shape (alone: load, then exit)",
    )
    grown.add_argument("--preload-days", type=float, default=30.0, help="created over D days")
    grown.add_argument("--store-url", help="preload this store instead of the stack's")
    lanes = p.add_argument_group("lanes (issue 18: a campaign, a second app, and probes)")
    lanes.add_argument(
        "--lanes",
        action="store_true",
        help="app A's campaign of N (bulk) + app B's bulk + transactional probes; per-lane figures",
    )
    lanes.add_argument(
        "--fair-app-notifications", type=int, default=1000, metavar="M", help="app B's bulk"
    )
    lanes.add_argument(
        "--fair-app-delay", type=float, default=2.0, help="seconds after the campaign starts"
    )
    lanes.add_argument(
        "--probe-interval", type=float, default=0.25, help="seconds between probes (0.25)"
    )
    lanes.add_argument("--probes", type=int, default=400, help="at most this many probes")
    lanes.add_argument(
        "--explicit-lanes", action="store_true", help="send the lane field instead of defaults"
    )
    add_tenant_arguments(p)
    return p


def check_args(args: argparse.Namespace) -> str | None:
    if args.tenants:
        return check_tenant_arguments(args)
    if args.preload is not None and not 1 <= args.preload <= 100_000_000:
        return "--preload must be 1..100000000"
    if not 0 < args.preload_days <= 3650:
        return "--preload-days must be > 0 and at most 3650"
    if args.notifications is None:
        return None if args.preload else "--notifications (or --preload) is required"
    if not 1 <= args.notifications <= 10_000_000:
        return "--notifications must be 1..10000000"
    if args.rate is not None and args.rate <= 0:
        return "--rate must be > 0"
    if args.kill_worker_every is not None and args.kill_worker_every < 1:
        return "--kill-worker-every must be >= 1 second"
    if args.batch_size is not None and not 1 <= args.batch_size <= 500:
        return "--batch-size must be 1..500"
    if args.connections < 1 or args.drain_timeout <= 0:
        return "--connections and --drain-timeout must be positive"
    problem = check_profile(args.provider_latency)
    if problem:
        return problem
    if args.lanes:
        return _check_lanes_args(args)
    return None


def _check_lanes_args(args: argparse.Namespace) -> str | None:
    if not 1 <= args.fair_app_notifications <= 1_000_000:
        return "--fair-app-notifications must be 1..1000000"
    if not 0 <= args.fair_app_delay <= 600:
        return "--fair-app-delay must be 0..600 seconds"
    if not 0.01 <= args.probe_interval <= 60:
        return "--probe-interval must be 0.01..60 seconds"
    if not 1 <= args.probes <= 100_000:
        return "--probes must be 1..100000"
    if batch_size(args) < 2 and not args.explicit_lanes:
        # single POSTs default to the transactional lane: the campaign would not be bulk
        return "--lanes needs batches of 2 or more (--batch-size, --rate) or --explicit-lanes"
    return None


def batch_size(args: argparse.Namespace) -> int:
    """Items per request: --batch-size, else R/20 with --rate (at most 500), else 500."""
    if args.batch_size:
        return int(args.batch_size)
    if args.rate:
        return max(1, min(500, int(args.rate / 20)))
    return 500
