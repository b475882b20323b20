"""``notifier bench --lanes``: issue 18's measurement, both lanes at once on a running stack.

App A submits a campaign of ``--notifications`` through the batch endpoint (bulk lane);
``--fair-app-delay`` seconds later app B submits ``--fair-app-notifications`` the same way
(its own bulk queue); meanwhile app A sends transactional probes, single POSTs (their
default lane), one every ``--probe-interval`` seconds until the bulk has been pushed (at
most ``--probes``). Then every accepted notification must reach a final status, as in the
plain bench, and the figures are per lane (``loadtest/lanes.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from rich.progress import Progress
from rich.table import Table

from emulator.control import EmulatorControl
from loadtest.accounting import Deliveries, account
from loadtest.bench import (
    STORE_CHECK_SECONDS,
    _cpu_per_notification,
    _progress,
    _store_counts,
    _submit_figures,
    clients,
    prepare,
)
from loadtest.bench_args import batch_size
from loadtest.driver import KillLog, SubmitStats, Submitter, kill_workers, make_payloads, open_count
from loadtest.lanes import (
    TRANSACTIONAL_P99_TARGET_MS,
    fairness,
    latency_by_phase,
    p99_met,
    subtract_counts,
)
from loadtest.resources import ResourceSampler
from notifier.apikeys import create_key
from notifier.models import Lane
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from notifier_tools.stack.components import StackConfig
from notifier_tools.stack.processes import StackError


def lane_payloads(count: int, lane: Lane | None, *, probe: bool = False) -> list[dict[str, Any]]:
    """Bench payloads; with ``lane``, the field is sent explicitly (else the API's default:
    bulk for a batch item, transactional for a single POST). Probes ask for high priority,
    as the issue's did: ``priority`` only sets the provider's header, never the lane."""
    payloads = make_payloads(count)
    for payload in payloads:
        if lane is not None:
            payload["lane"] = lane.value
        if probe:
            payload.update(title="probe", priority="high")
    return payloads


@dataclass(slots=True)
class Streams:
    """What each of the three streams had accepted."""

    campaign: SubmitStats
    fair: SubmitStats
    probes: SubmitStats
    submitted_at: float = 0.0  # when both apps' bulk had been accepted (Unix seconds)

    @property
    def accepted(self) -> int:
        return len(self.campaign.ids) + len(self.fair.ids) + len(self.probes.ids)


@dataclass
class _LanesRun:
    args: argparse.Namespace
    config: StackConfig
    apps: tuple[str, str]
    store: NotificationStore
    session: aiohttp.ClientSession
    control: EmulatorControl
    progress: Progress
    sampler: ResourceSampler
    kills: KillLog = field(default_factory=KillLog)
    baseline: int = 0

    def _submitter(self, key: str, name: str, total: int, **pace: Any) -> Submitter:
        task = self.progress.add_task(name, total=total)
        return Submitter(
            self.session,
            self.config.base_url,
            key,
            on_progress=lambda n: self.progress.advance(task, n),
            **pace,
        )

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            self.sampler.sample()

    async def _pushed(self) -> int:
        return await self.control.pushed() - self.baseline

    async def submit(self, keys: tuple[str, str]) -> Streams:
        args = self.args
        explicit = args.explicit_lanes
        self.baseline = await self.control.pushed()
        bulk = {"batch_size": batch_size(args), "connections": args.connections}
        campaign = self._submitter(keys[0], "app A  ", args.notifications, rate=args.rate, **bulk)
        fair = self._submitter(keys[1], "app B  ", args.fair_app_notifications, rate=None, **bulk)
        probes = self._submitter(
            keys[0], "probes ", args.probes, batch_size=1, rate=1 / args.probe_interval,
            connections=4,
        )  # fmt: skip
        bulk_lane = Lane.BULK if explicit else None
        stop_probes, stop_kills = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(campaign.run(lane_payloads(args.notifications, bulk_lane)))]
        tx_lane = Lane.TRANSACTIONAL if explicit else None
        probe_payloads = lane_payloads(args.probes, tx_lane, probe=True)
        probing = asyncio.create_task(probes.run(probe_payloads, stop=stop_probes))
        killer = self._start_killer(stop_kills)
        await self._wait(lambda: False, args.fair_app_delay)
        fair_payloads = lane_payloads(args.fair_app_notifications, bulk_lane)
        tasks.append(asyncio.create_task(fair.run(fair_payloads)))
        await self._wait(lambda: all(t.done() for t in tasks), float("inf"))
        streams = Streams(tasks[0].result(), tasks[1].result(), probes.stats, time.time())
        await self._until_all_pushed(streams, probing)
        stop_probes.set()
        await probing
        await self._until_all_pushed(streams, probing)  # the last probes, under kills too
        stop_kills.set()
        if killer is not None:
            try:
                await killer
            except StackError as exc:  # a killed worker did not come back: drain what runs
                self.progress.console.print(f"kills stopped: {exc}")
        return streams

    def _start_killer(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        if not self.args.kill_worker_every:
            return None
        say = self.progress.console.print
        every = self.args.kill_worker_every
        return asyncio.create_task(kill_workers(self.config, every, stop, self.kills, say))

    async def _until_all_pushed(self, streams: Streams, probing: asyncio.Task[Any]) -> None:
        """Until the emulator saw every accepted id once (probes keep going meanwhile)."""
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline and not probing.done():
            if await self._pushed() >= streams.accepted:
                return
            await asyncio.sleep(0.25)
            self.sampler.sample()
        while time.monotonic() < deadline and await self._pushed() < streams.accepted:
            await asyncio.sleep(0.25)
            self.sampler.sample()

    async def drain(self, streams: Streams) -> tuple[dict[str, int], dict[str, int]]:
        """Wait until both apps have nothing open (or the timeout); their status counts."""
        task = self.progress.add_task("drain  ", total=max(1, streams.accepted))
        deadline = time.monotonic() + self.args.drain_timeout
        next_check = 0.0
        while time.monotonic() < deadline:
            pushed = await self._pushed()
            self.progress.update(task, completed=min(streams.accepted, pushed))
            if pushed >= streams.accepted or time.monotonic() >= next_check:
                next_check = time.monotonic() + STORE_CHECK_SECONDS
                still = [await _store_counts(self.store, a, open_only=True) for a in self.apps]
                if sum(open_count(c) for c in still) == 0:
                    break
            await asyncio.sleep(0.5)
            self.sampler.sample()
        a, b = [await _store_counts(self.store, app) for app in self.apps]
        return a, b

    async def statuses_of(self, ids: list[str]) -> dict[str, int]:
        """The probes' statuses, one read each (they share app A with the campaign)."""
        counts: Counter[str] = Counter()
        for nid in ids:
            doc = await self.store.get(nid, self.apps[0])
            counts[doc.status.value if doc else "pending"] += 1  # missing: counted as lost
        return dict(counts)


async def run_lanes(args: argparse.Namespace, config: StackConfig) -> dict[str, Any]:
    config, settings, stamp = await prepare(args, config)
    apps = (f"{stamp}-a", f"{stamp}-b")
    keys = (await create_key(settings, apps[0]), await create_key(settings, apps[1]))
    store = await open_store(settings, setup=False)
    try:
        async with clients(config) as (session, control, sampler):
            with _progress() as progress:
                run = _LanesRun(args, config, apps, store, session, control, progress, sampler)
                streams = await run.submit(keys)
                counts = await run.drain(streams)
                probe_counts = await run.statuses_of(streams.probes.ids)
            deliveries = await control.deliveries(skip=run.baseline)
        figures = lane_figures(streams, deliveries, counts, probe_counts)
        accepted = streams.accepted
        return {
            "command": "notifier bench " + " ".join(args.argv),
            "mode": "lanes",
            "notifications": args.notifications,
            "fair_app_notifications": args.fair_app_notifications,
            "fair_app_delay": args.fair_app_delay,
            "probe_interval": args.probe_interval,
            "explicit_lanes": args.explicit_lanes,
            "workers": config.workers,
            "store": config.store_url.split("://")[0],
            "apps": {"campaign": apps[0], "fair": apps[1]},
            **figures,
            "kills": run.kills.kills,
            "resources": (resources := sampler.summary()),
            "pipeline_cpu_ms_per_notification": _cpu_per_notification(resources, accepted),
        }
    finally:
        await store.close()


def lane_figures(
    streams: Streams,
    deliveries: Deliveries,
    counts: tuple[dict[str, int], dict[str, int]],
    probe_counts: dict[str, int],
) -> dict[str, Any]:
    """Per-lane accounting: the probes are the transactional lane, A's campaign and B's
    notifications the bulk lane; lost and duplicates are summed over both lanes too."""
    probes = account(streams.probes.ids, deliveries, probe_counts)
    campaign_counts = subtract_counts(counts[0], probe_counts)
    campaign = account(streams.campaign.ids, deliveries, campaign_counts)
    fair_app = account(streams.fair.ids, deliveries, counts[1])
    bulk_ids = streams.campaign.ids + streams.fair.ids
    bulk = account(bulk_ids, deliveries, dict(Counter(campaign_counts) + Counter(counts[1])))
    bulk_per_s = bulk.received / bulk.delivery_seconds if bulk.received else 0.0
    return {
        "submit": {
            "campaign": _submit_figures(streams.campaign),
            "fair_app": _submit_figures(streams.fair),
            "probes": _submit_figures(streams.probes),
        },
        "transactional": {
            **probes.to_dict(),
            "by_phase": {
                phase: asdict(latency)
                for phase, latency in latency_by_phase(
                    streams.probes.ids, deliveries, streams.submitted_at
                ).items()
            },
            "p99_target_ms": TRANSACTIONAL_P99_TARGET_MS,
            "p99_met": p99_met(probes.latency.p99_ms),
        },
        "bulk": {
            **bulk.to_dict(),
            "delivered_per_s": round(bulk_per_s, 1),
            "campaign": campaign.to_dict(),
            "fair_app": fair_app.to_dict(),
        },
        "fairness": fairness(streams.fair.ids, bulk_ids, deliveries).to_dict(),
        "lost": probes.lost + bulk.lost,
        "duplicates": probes.duplicates + bulk.duplicates,
    }


def _phase_rows(by_phase: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    rows = []
    for phase, lat in by_phase.items():
        met = "met" if p99_met(lat["p99_ms"]) else "NOT met"
        figures = f"p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms ({met})"
        rows.append(("", f"while {phase} ({lat['count']})", figures))
    return rows


def lanes_table(summary: dict[str, Any]) -> Table:
    tx, bulk, fair = summary["transactional"], summary["bulk"], summary["fairness"]
    lat = tx["latency"]
    table = Table(
        title=f"notifier bench --lanes: campaign {summary['notifications']}, app B "
        f"{summary['fair_app_notifications']}, {summary['workers']} workers ({summary['store']})"
    )
    for column in ("lane", "figure"):
        table.add_column(column)
    table.add_column("value", justify="right")
    tx_met = "met" if tx["p99_met"] else "NOT met"
    fair_met = "met" if fair["met"] else "NOT met"
    a, b = bulk["campaign"]["accepted"], bulk["fair_app"]["accepted"]
    share = f"{fair['fair_share_seconds']:.2f} s at {fair['bulk_per_s']:.0f}/s"
    refused = ", ".join(
        f"{name} {s['rejected']} / {s['errors']}" for name, s in summary["submit"].items()
    )
    rows = [
        ("transactional", "probes received", f"{lat['count']} of {tx['accepted']}"),
        ("", "created->received p50", f"{lat['p50_ms']:.1f} ms"),
        ("", "created->received p99", f"{lat['p99_ms']:.1f} ms (target 100 ms: {tx_met})"),
        ("", "created->received max", f"{lat['max_ms']:.1f} ms"),
        *_phase_rows(tx["by_phase"]),
        ("", "lost / duplicates", f"{tx['lost']} / {tx['duplicates']}"),
        ("bulk", "accepted (app A + app B)", f"{a} + {b}"),
        ("", "delivered/s", f"{bulk['delivered_per_s']:.0f}"),
        ("", "app B done in", f"{fair['completion_seconds']:.2f} s"),
        ("", "app B fair share", share),
        ("", "app B / fair share", f"{fair['ratio']:.2f} (target <= 2: {fair_met})"),
        ("", "lost / duplicates", f"{bulk['lost']} / {bulk['duplicates']}"),
        ("both", "refused / errors", refused),
        ("", "workers killed", str(len(summary["kills"]))),
        ("", "pipeline CPU per notification", f"{summary['pipeline_cpu_ms_per_notification']} ms"),
    ]
    for row in rows:
        table.add_row(*row)
    return table
