"""``notifier bench``: end-to-end throughput, latency, duplicates and losses on a running stack.

It reads the stack's run folder (ports, PIDs, store), creates an API key of its own (a
fresh app name, so the store's counts for that app are exactly this run's notifications),
submits through nginx with a progress bar, optionally SIGKILLs workers on a period, waits
for every accepted notification to reach a final status, and prints a summary table plus a
JSON file of the same figures. Bounded: ``--notifications`` and ``--drain-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emulator.control import EmulatorControl
from loadtest.accounting import DeliveryReport, account
from loadtest.bench_args import batch_size, check_args, parser
from loadtest.driver import (
    KillLog,
    SubmitStats,
    Submitter,
    final_count,
    kill_workers,
    make_payloads,
    open_count,
    status_dict,
)
from loadtest.latency import provider_latency
from loadtest.resources import ResourceSampler, service_ports
from notifier.apikeys import create_key
from notifier.settings import Settings, load_settings
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from notifier_tools.procs import check_health
from notifier_tools.stack.components import StackConfig
from notifier_tools.stack.lifecycle import records_by_name, scale_workers
from notifier_tools.stack.processes import StackError, process_of

console = Console(stderr=False)


def _load_stack(run_dir: Path) -> StackConfig:
    config = StackConfig.load(run_dir)
    if config is None:
        raise SystemExit(f"notifier bench: no stack in {run_dir}; run `notifier stack up` first")
    nginx = records_by_name(config).get("nginx")
    if nginx is None or process_of(nginx) is None or not check_health(nginx.health_url):
        raise SystemExit(f"notifier bench: the stack in {run_dir} is not running (nginx)")
    return config


# While the emulator's count is short of the accepted, how often the store is asked anyway.
STORE_CHECK_SECONDS = 5.0


async def _store_counts(
    store: NotificationStore, app: str, *, open_only: bool = False
) -> dict[str, int]:
    return status_dict(await store.counts_by_status(app, open_only=open_only))


@dataclass
class _Run:
    """One bench run's resources and progress display."""

    args: argparse.Namespace
    config: StackConfig
    app: str
    store: NotificationStore
    session: aiohttp.ClientSession
    control: EmulatorControl
    progress: Progress
    sampler: ResourceSampler
    kills: KillLog = field(default_factory=KillLog)
    baseline: int = 0  # the emulator's count of distinct ids pushed before this run

    async def submit(self, key: str, payloads: list[dict[str, Any]]) -> SubmitStats:
        """Submit everything (killing workers meanwhile when asked); returns what was accepted."""
        self.baseline = baseline = await self.control.pushed()
        task = self.progress.add_task("submit ", total=len(payloads))
        submitter = Submitter(
            self.session,
            self.config.base_url,
            key,
            batch_size=batch_size(self.args),
            rate=self.args.rate,
            connections=self.args.connections,
            on_progress=lambda n: self.progress.advance(task, n),
        )
        stop = asyncio.Event()
        killer = None
        if self.args.kill_worker_every:
            say = self.progress.console.print
            killer = asyncio.create_task(
                kill_workers(self.config, self.args.kill_worker_every, stop, self.kills, say)
            )
        submitting = asyncio.create_task(submitter.run(payloads))
        while not submitting.done():
            await asyncio.wait({submitting}, timeout=1.0)
            self.sampler.sample()
        stats = submitting.result()
        if killer is not None:
            await self._until_pushed(baseline, len(stats.ids))
            stop.set()
            try:
                await killer
            except StackError as exc:  # a killed worker did not come back: drain what runs
                self.progress.console.print(f"kills stopped: {exc}")
        return stats

    async def _until_pushed(self, baseline: int, accepted: int) -> None:
        """Keep killing while work is in flight: until every accepted id was pushed once."""
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline:
            if await self.control.pushed() - baseline >= accepted:
                return
            await asyncio.sleep(0.5)
            self.sampler.sample()

    async def drain(self, accepted: int) -> dict[str, int]:
        """Wait until every accepted notification of the app is final, or the timeout.

        Progress is the emulator's count of distinct ids pushed, which costs the pipeline
        nothing. The store is asked only once that count is complete, or every
        ``STORE_CHECK_SECONDS`` for what never reaches the emulator (failures, expiries), and
        then only for the app's open documents (a partial index: the backlog, not the
        app's whole table); the status counts of the summary are read once, at the end.
        """
        task = self.progress.add_task("drain  ", total=max(1, accepted))
        deadline = time.monotonic() + self.args.drain_timeout
        next_check = time.monotonic() + STORE_CHECK_SECONDS
        while time.monotonic() < deadline:
            pushed = await self.control.pushed() - self.baseline
            self.progress.update(task, completed=min(accepted, pushed))
            if pushed >= accepted or time.monotonic() >= next_check:
                next_check = time.monotonic() + STORE_CHECK_SECONDS
                # every accepted notification is stored (the API answers after the insert)
                if open_count(await _store_counts(self.store, self.app, open_only=True)) == 0:
                    break
            await asyncio.sleep(0.5)
            self.sampler.sample()
        counts = await _store_counts(self.store, self.app)
        self.progress.update(task, completed=min(accepted, final_count(counts)))
        return counts


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console)


async def prepare(
    args: argparse.Namespace, config: StackConfig
) -> tuple[StackConfig, Settings, str]:
    """The stack scaled to ``--workers``, its settings, and a name for this run's apps."""
    if args.workers is not None and args.workers != config.workers:
        config = await asyncio.to_thread(scale_workers, config, args.workers, console.print)
    settings = load_settings({}, store_url=config.store_url, amqp_url=config.amqp_url)
    return config, settings, f"bench-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"


@asynccontextmanager
async def clients(
    config: StackConfig,
) -> AsyncIterator[tuple[aiohttp.ClientSession, EmulatorControl, ResourceSampler]]:
    """An HTTP session for the API, the emulator's control client, and a CPU sampler."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        EmulatorControl(config.emulator_url, config.ca_file, timeout=60) as control,
    ):
        ports = service_ports(config.amqp_url, config.store_url)
        yield session, control, ResourceSampler(config.pids_dir, ports)


async def run_bench(args: argparse.Namespace, config: StackConfig) -> dict[str, Any]:
    config, settings, app = await prepare(args, config)
    key = await create_key(settings, app)
    store = await open_store(settings, setup=False)
    payloads = make_payloads(args.notifications)
    try:
        async with clients(config) as (session, control, sampler):
            with _progress() as progress:
                run = _Run(args, config, app, store, session, control, progress, sampler)
                stats = await run.submit(key, payloads)
                counts = await run.drain(len(stats.ids))
            deliveries = await control.deliveries(skip=run.baseline)  # only since this run
        report = account(stats.ids, deliveries, counts)
        return _summary(args, config, app, stats, report, run.kills, sampler.summary())
    finally:
        await store.close()


def _summary(
    args: argparse.Namespace,
    config: StackConfig,
    app: str,
    stats: SubmitStats,
    report: DeliveryReport,
    kills: KillLog,
    resources: dict[str, dict[str, float]],
) -> dict[str, Any]:
    delivered_per_s = report.received / report.delivery_seconds if report.received else 0.0
    return {
        "command": "notifier bench " + " ".join(args.argv),
        "notifications": args.notifications,
        "workers": config.workers,
        "store": config.store_url.split("://")[0],
        "app": app,
        "rate": args.rate,
        "batch_size": batch_size(args),
        "submit": _submit_figures(stats),
        "delivery": report.to_dict(),
        "delivered_per_s": round(delivered_per_s, 1),
        "kills": kills.kills,
        "resources": resources,
        "pipeline_cpu_ms_per_notification": _cpu_per_notification(resources, report.accepted),
        "lost": report.lost,
        "duplicates": report.duplicates,
    }


def _submit_figures(stats: SubmitStats) -> dict[str, Any]:
    return {
        "accepted": len(stats.ids),
        "rejected": stats.rejected,
        "errors": stats.errors,
        "retries": stats.retries,
        "seconds": round(stats.seconds, 3),
        "accepted_per_s": round(len(stats.ids) / stats.seconds, 1),
        "examples": stats.examples,
    }


def _cpu_per_notification(resources: dict[str, dict[str, float]], accepted: int) -> float:
    """CPU milliseconds the pipeline (every component, services included) spent per notification.

    RabbitMQ and PostgreSQL are shared: whatever else used them during the run counts too.
    """
    not_pipeline = {"bench", "other processes", "machine"}
    cpu = sum(u["cpu_seconds"] for name, u in resources.items() if name not in not_pipeline)
    return round(1000.0 * cpu / accepted, 2) if accepted else 0.0


def _table(summary: dict[str, Any]) -> Table:
    d, s, lat = summary["delivery"], summary["submit"], summary["delivery"]["latency"]
    table = Table(
        title=f"notifier bench: {summary['notifications']} notifications, "
        f"{summary['workers']} workers ({summary['store']})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("accepted", f"{s['accepted']} ({s['rejected']} refused, {s['errors']} errors)"),
        ("accepted/s", f"{s['accepted_per_s']:.0f}"),
        ("delivered/s", f"{summary['delivered_per_s']:.0f}"),
        ("sent / failed", f"{d['sent']} / {d['failed']}"),
        ("created->received p50", f"{lat['p50_ms']:.1f} ms"),
        ("created->received p95", f"{lat['p95_ms']:.1f} ms"),
        ("created->received p99", f"{lat['p99_ms']:.1f} ms"),
        ("duplicates", str(summary["duplicates"])),
        ("lost", str(summary["lost"])),
        ("workers killed", str(len(summary["kills"]))),
        ("pipeline CPU per notification", f"{summary['pipeline_cpu_ms_per_notification']} ms"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    machine = summary["resources"].get("machine", {})
    if machine:
        table.add_row("machine load (1 min)", f"{machine['load_start']} -> {machine['load_end']}")
    for name, usage in summary["resources"].items():
        table.add_row(
            f"{name} CPU / RSS", f"{usage['cpu_percent']:.0f}% / {usage['rss_mb']:.0f} MB"
        )
    cores = int(machine.get("cores", 1)) if machine else 1
    table.caption = f"CPU: share of one core over the run ({cores} cores = {100 * cores}%)"
    return table


def _jsonable(value: Any) -> Any:
    """NaN (no sample) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def _run(args: argparse.Namespace, config: StackConfig) -> dict[str, Any]:
    """The run (plain, lanes or tenants) under the emulator latency profile asked for."""
    async with provider_latency(config, args.provider_latency) as latency:
        if args.tenants:
            from loadtest.tenants_bench import run_tenants

            summary = await run_tenants(args, config)
        elif args.lanes:
            from loadtest.lanes_bench import run_lanes

            summary = await run_lanes(args, config)
        else:
            summary = await run_bench(args, config)
    return {**summary, "provider_latency": latency}


def _preload(args: argparse.Namespace) -> None:
    """``--preload N``: fill the store (``--store-url``, else the stack's) first."""
    from loadtest.preload import preload

    url = args.store_url
    if url is None:
        config = StackConfig.load(Path(args.run_dir).resolve())
        if config is None:
            raise SystemExit(f"notifier bench: no stack in {args.run_dir} (or give --store-url)")
        url = config.store_url
    asyncio.run(preload(url, args.preload, days=args.preload_days, say=console.print))


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    args.argv = list(argv)
    problem = check_args(args)
    if problem:
        print(f"notifier bench: {problem}", file=sys.stderr)
        return 2
    try:
        if args.preload:
            _preload(args)
            if args.notifications is None:
                return 0
        config = _load_stack(Path(args.run_dir).resolve())
        summary = asyncio.run(_run(args, config))
        if args.tenants:
            from loadtest.tenants import tenants_table

            table = tenants_table(summary)
        elif args.lanes:
            from loadtest.lanes_bench import lanes_table

            table = lanes_table(summary)
            table.add_row("", "provider latency", summary["provider_latency"])
        else:
            table = _table(summary)
            table.add_row("provider latency", summary["provider_latency"])
    except KeyboardInterrupt:
        return 130
    except StackError as exc:  # the stack is not (or no longer) running as it should
        print(f"notifier bench: {exc}", file=sys.stderr)
        return 1
    console.print(table)
    path = args.json or Path(args.run_dir) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(summary), indent=1, default=str))
    console.print(f"summary JSON: {path}")
    no_kills = not summary["kills"]
    ok = summary["lost"] == 0 and (summary["duplicates"] == 0 or not no_kills)
    return 0 if ok else 1
