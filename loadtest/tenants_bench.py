"""``notifier bench --tenants``: issue 16's done-when run on a running ``notifier stack``.

Apps A, B and C each get an FCM project and an APNs team of their own (keys the emulator
makes), stored through the admin API. All three send at ``--tenant-rate`` for
``--healthy-seconds``; then B's ``--revoke`` credential is revoked at the emulator while
they keep sending. The run times how long until B's credential is reported unhealthy (the
workers' ``notifier_credential_healthy`` gauge, ``GET /v1/apps/me/credentials/health``)
and until ``NotifierCredentialUnhealthy`` fires in the stack's Prometheus; it then stops
sending, reads B's statuses (held as ``retrying``, none failed), replaces the credential
through the admin API (no restart) and waits until everything is delivered. Figures: the
emulator's per-credential counts against what each app sent, those times, and A's and C's
created -> received latency before and after the revocation (``loadtest/tenants.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.progress import Progress

from emulator.control import EmulatorControl
from loadtest.accounting import account, created_seconds
from loadtest.bench import _progress, _store_counts, clients, prepare
from loadtest.driver import SubmitStats, Submitter, make_payloads, open_count
from loadtest.resources import ResourceSampler
from loadtest.tenants import ALERT, credential_counts, latency_between, latency_figures
from notifier.adminkeys import create_admin_key
from notifier.apikeys import create_key
from notifier.store.base import NotificationStore
from notifier.store.factory import open_store
from notifier_tools.stack.components import HOST, StackConfig
from notifier_tools.stack.lifecycle import records_by_name

POLL_SECONDS = 0.25


@dataclass
class Timeline:
    """Unix times of what the run saw (None: not seen)."""

    revoked: float = 0.0
    gauge_unhealthy: float | None = None
    route_unhealthy: float | None = None
    alert_pending: float | None = None
    alert_firing: float | None = None
    replaced: float = 0.0
    replaced_healthy: float | None = None
    replaced_all_sent: float | None = None

    def figures(self) -> dict[str, float | None]:
        def since(start: float, at: float | None) -> float | None:
            return None if at is None else round(at - start, 2)

        return {
            "gauge_unhealthy_s": since(self.revoked, self.gauge_unhealthy),
            "route_unhealthy_s": since(self.revoked, self.route_unhealthy),
            "alert_pending_s": since(self.revoked, self.alert_pending),
            "alert_firing_s": since(self.revoked, self.alert_firing),
            "replaced_healthy_s": since(self.replaced, self.replaced_healthy),
            "replaced_all_sent_s": since(self.replaced, self.replaced_all_sent),
        }


@dataclass
class _TenantsRun:
    args: argparse.Namespace
    config: StackConfig
    apps: tuple[str, str, str]
    keys: dict[str, str]
    admin_key: str
    store: NotificationStore
    session: aiohttp.ClientSession
    control: EmulatorControl
    progress: Progress
    sampler: ResourceSampler
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # app -> provider -> name
    key_ids: dict[str, str] = field(default_factory=dict)  # app -> APNs key id
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def broken(self) -> str:
        return self.apps[1]

    # -- credentials through the admin API ----------------------------------------------------
    async def _put(self, app: str, provider: str, body: dict[str, Any]) -> None:
        url = f"{self.config.base_url}/v1/admin/apps/{app}/credentials/{provider}"
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        async with self.session.put(url, json=body, headers=headers) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT {provider} credential of {app}: {resp.status}")

    async def set_fcm(self, app: str, project: str) -> None:
        info = await self.control.add_fcm_project(project)
        await self._put(app, "fcm", {"service_account": info})
        self.names.setdefault(app, {})["fcm"] = project

    async def set_apns(self, app: str, team_id: str | None = None) -> None:
        topic = f"com.example.{app.replace('-', '.')}"
        key = await self.control.add_apns_key(team_id=team_id, topics=[topic])
        body = {k: key[k] for k in ("key_id", "team_id", "topics")}
        await self._put(app, "apns", {**body, "private_key": key["key_pem"]})
        self.names.setdefault(app, {})["apns"] = f"{key['team_id']}/{key['key_id']}"
        self.key_ids[app] = key["key_id"]

    # -- sending -----------------------------------------------------------------------------
    def submitter(self, app: str) -> Submitter:
        task = self.progress.add_task(f"app {app[-1].upper()}  ", total=None)
        return Submitter(
            self.session,
            self.config.base_url,
            self.keys[app],
            batch_size=1,
            rate=self.args.tenant_rate,
            connections=8,
            on_progress=lambda n: self.progress.advance(task, n),
        )

    async def warm_up(self) -> None:
        """A few notifications per app and platform, pushed before the clock starts: each
        worker's first push of an app loads its credentials and fetches a token."""
        ids: list[str] = []
        for app in self.apps:
            submitter = Submitter(
                self.session, self.config.base_url, self.keys[app], batch_size=1,
                rate=None, connections=2, on_progress=lambda n: None,
            )  # fmt: skip
            ids += (await submitter.run(make_payloads(2 * self.config.workers))).ids
        for _ in range(int(60 / POLL_SECONDS)):
            if await self._delivered(ids):
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _delivered(self, ids: list[str]) -> bool:
        return all([await self.control.delivery(i) is not None for i in ids])

    # -- watching B's credential ---------------------------------------------------------------
    async def gauge(self) -> float | None:
        """The lowest ``notifier_credential_healthy`` of B's credential over the workers
        (one line of their ``/metrics``, found by a regular expression: parsing the whole
        text four times a second would load the machine the latencies are measured on)."""
        labels = f'app="{re.escape(self.broken)}",provider="{self.args.revoke}"'
        line = re.compile(r"^notifier_credential_healthy\{" + labels + r"\} (\S+)$", re.M)
        values = []
        for port in self.config.worker_ports():
            try:
                async with self.session.get(f"http://{HOST}:{port}/metrics") as resp:
                    found = line.search(await resp.text())
            except aiohttp.ClientError:
                continue
            if found:
                values.append(float(found.group(1)))
        return min(values, default=None)

    async def route_healthy(self) -> bool | None:
        url = f"{self.config.base_url}/v1/apps/me/credentials/health"
        headers = {"Authorization": f"Bearer {self.keys[self.broken]}"}
        async with self.session.get(url, headers=headers) as resp:
            body = await resp.json()
        for entry in body["credentials"]:
            if entry["provider"] == self.args.revoke:
                healthy: bool | None = entry["healthy"]
                return healthy
        return None

    async def alert_state(self) -> str | None:
        url = f"{self.config.prometheus_url}/api/v1/alerts"
        async with self.session.get(url) as resp:
            alerts = (await resp.json())["data"]["alerts"]
        for alert in alerts:
            labels = alert["labels"]
            if (labels.get("alertname"), labels.get("app"), labels.get("provider")) == (
                ALERT,
                self.broken,
                self.args.revoke,
            ):
                state: str = alert["state"]
                return state
        return None

    async def watch_until_firing(self) -> None:
        """Poll until the alert fires; each time is taken when the answer arrived."""
        t = self.timeline
        deadline = time.monotonic() + self.args.alert_timeout
        next_alert_check = 0.0
        while time.monotonic() < deadline and t.alert_firing is None:
            if t.gauge_unhealthy is None and await self.gauge() == 0:
                t.gauge_unhealthy = time.time()
            if t.route_unhealthy is None and await self.route_healthy() is False:
                t.route_unhealthy = time.time()
            if time.monotonic() >= next_alert_check:
                next_alert_check = time.monotonic() + 1.0
                state = await self.alert_state()
                if state in ("pending", "firing") and t.alert_pending is None:
                    t.alert_pending = time.time()
                if state == "firing":
                    t.alert_firing = time.time()
            await asyncio.sleep(POLL_SECONDS)
            self.sampler.sample()

    async def revoke(self) -> None:
        self.timeline.revoked = time.time()
        if self.args.revoke == "fcm":
            await self.control.revoke_fcm(self.names[self.broken]["fcm"])
        else:
            await self.control.revoke_apns(self.key_ids[self.broken])

    async def replace(self) -> None:
        """A new key for the same project or team, set through the admin API."""
        self.timeline.replaced = time.time()
        if self.args.revoke == "fcm":
            await self.set_fcm(self.broken, self.names[self.broken]["fcm"])
        else:
            team = self.names[self.broken]["apns"].split("/")[0]
            await self.set_apns(self.broken, team_id=team)

    async def statuses(self, ids: list[str], app: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for nid in ids:
            doc = await self.store.get(nid, app)
            counts[doc.status.value if doc else "missing"] += 1
        return dict(counts)

    async def until_delivered(self, held: list[str]) -> dict[str, dict[str, int]]:
        """After the replacement: until B is healthy again, B's held ones are all sent and
        no app has an open notification (or ``--drain-timeout``); the apps' status counts."""
        t = self.timeline
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline:
            if t.replaced_healthy is None and await self.gauge() == 1:
                t.replaced_healthy = time.time()
            if t.replaced_all_sent is None and await self._delivered_fast(held):
                t.replaced_all_sent = time.time()
            if t.replaced_healthy and t.replaced_all_sent:
                still = [await _store_counts(self.store, a, open_only=True) for a in self.apps]
                if sum(open_count(c) for c in still) == 0:
                    break
            await asyncio.sleep(1.0)
            self.sampler.sample()
        return {app: await _store_counts(self.store, app) for app in self.apps}

    async def _delivered_fast(self, ids: list[str]) -> bool:
        statuses = await self.statuses(ids, self.broken)
        return statuses.get("sent", 0) == len(ids)

    def worker_pids(self) -> dict[str, int]:
        return {n: r.pid for n, r in records_by_name(self.config).items() if n.startswith("worker")}


async def _send(run: _TenantsRun) -> dict[str, SubmitStats]:
    """Send for all three apps; revoke B's credential after ``--healthy-seconds``; stop
    once the alert fires (or ``--alert-timeout``)."""
    stop = asyncio.Event()
    seconds = run.args.warmup_seconds + run.args.healthy_seconds + run.args.alert_timeout
    most = int(run.args.tenant_rate * seconds) + 10
    submitters = {app: run.submitter(app) for app in run.apps}
    tasks = {
        app: asyncio.create_task(s.run(make_payloads(most), stop=stop))
        for app, s in submitters.items()
    }
    await asyncio.sleep(run.args.warmup_seconds + run.args.healthy_seconds)
    await run.revoke()
    await run.watch_until_firing()
    stop.set()
    return {app: await task for app, task in tasks.items()}


async def _platforms(run: _TenantsRun, stats: dict[str, SubmitStats]) -> dict[str, str]:
    """Each accepted id's platform, read back from the store (one read per id)."""
    out: dict[str, str] = {}
    for app, s in stats.items():
        for nid in s.ids:
            doc = await run.store.get(nid, app)
            if doc is not None:
                out[nid] = doc.target.platform.value
    return out


def _sent_by_platform(
    stats: dict[str, SubmitStats], platforms: dict[str, str]
) -> dict[str, dict[str, int]]:
    return {
        app: dict(Counter(platforms[i] for i in s.ids if i in platforms))
        for app, s in stats.items()
    }


async def run_tenants(args: argparse.Namespace, config: StackConfig) -> dict[str, Any]:
    config, settings, stamp = await prepare(args, config)
    apps = (f"{stamp}-a", f"{stamp}-b", f"{stamp}-c")
    keys = {app: await create_key(settings, app) for app in apps}
    admin_key = await create_admin_key(settings)
    store = await open_store(settings, setup=False)
    try:
        async with clients(config) as (session, control, sampler):
            with _progress() as progress:
                run = _TenantsRun(
                    args, config, apps, keys, admin_key, store, session, control, progress, sampler
                )
                for i, app in enumerate(apps):
                    await run.set_fcm(app, f"{stamp}-{'abc'[i]}-project")
                    await run.set_apns(app)
                await run.warm_up()
                pids = run.worker_pids()
                before = (await control.summary())["by_credential"]
                baseline = await control.pushed()
                stats = await _send(run)
                platforms = await _platforms(run, stats)
                held_ids = [
                    i for i in stats[run.broken].ids
                    if platforms.get(i) == args.revoke
                    and created_seconds(i) >= run.timeline.revoked
                ]  # fmt: skip
                at_alert = await run.statuses(held_ids, run.broken)
                await run.replace()
                counts = await run.until_delivered(held_ids)
                restarted = sum(1 for n, p in run.worker_pids().items() if pids.get(n) != p)
            after = (await control.summary())["by_credential"]
            deliveries = await control.deliveries(skip=baseline)
        sent = _sent_by_platform(stats, platforms)
        return _summary(args, config, run, stats, deliveries, counts, before, after, sent,
                        at_alert, held_ids, restarted, sampler.summary())  # fmt: skip
    finally:
        await store.close()


def _summary(
    args: argparse.Namespace,
    config: StackConfig,
    run: _TenantsRun,
    stats: dict[str, SubmitStats],
    deliveries: Any,
    counts: dict[str, dict[str, int]],
    before: Any,
    after: Any,
    sent: dict[str, dict[str, int]],
    at_alert: dict[str, int],
    held_ids: list[str],
    restarted: int,
    resources: dict[str, dict[str, float]],
) -> dict[str, Any]:
    t = run.timeline
    others = [i for app in (run.apps[0], run.apps[2]) for i in stats[app].ids]
    # the healthy window starts after the warm-up: each worker's first pushes of an app
    # load its credentials and fetch a token, and a fresh stack warms its connections
    started = min((float(s.started) for s in stats.values()), default=0.0)
    start = started + args.warmup_seconds
    healthy = latency_between(others, deliveries, start, t.revoked)
    broken = latency_between(others, deliveries, t.revoked, t.alert_firing or time.time())
    reports = {app: account(stats[app].ids, deliveries, counts[app]) for app in run.apps}
    return {
        "command": "notifier bench " + " ".join(args.argv),
        "mode": "tenants",
        "tenant_rate": args.tenant_rate,
        "warmup_seconds": args.warmup_seconds,
        "healthy_seconds": args.healthy_seconds,
        "revoked": args.revoke,
        "workers": config.workers,
        "store": config.store_url.split("://")[0],
        "apps": {"A": run.apps[0], "B": run.apps[1], "C": run.apps[2]},
        "credentials": run.names,
        "credential_counts": credential_counts(sent, run.names, before, after),
        "timeline": t.figures(),
        "held": {
            "count": len(held_ids),
            "at_alert": at_alert,
            "failed": at_alert.get("failed", 0) + counts[run.broken].get("failed", 0),
        },
        "others_latency": latency_figures(healthy, broken),
        "by_app": {app: r.to_dict() for app, r in reports.items()},
        "workers_restarted": restarted,
        "resources": resources,
        "kills": [],
        "lost": sum(r.lost for r in reports.values()),
        "duplicates": sum(r.duplicates for r in reports.values()),
    }
