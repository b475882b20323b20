"""Benchmark the delivery workers against the provider emulator (not a test).

For 1, 2 and 4 worker processes: pre-insert N notifications into a fresh PostgreSQL
database and publish them (the queue fills while no worker runs), start the workers and
time the drain (first to last ``sent_at``): delivered/s. Then a steady phase feeds a fixed
rate for a few seconds to measure created->sent latency (p50/p99) and worker RSS. "CPU ms"
is the workers' CPU time per delivery during the drain; the lines below the table give the
same for PostgreSQL, the emulator and RabbitMQ, which share the machine's cores.

    .venv/bin/python -m notifier_tools.bench.workers [--count 20000] [--workers 1 2 4]
        [--concurrency 256] [--rate 1500] [--steady-seconds 8]

Needs RabbitMQ and PostgreSQL (scripts/services.sh up). Binds only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from emulator.testing import EmulatorHandle, run_emulator
from loadtest.accounting import percentile
from loadtest.resources import family_cpu_seconds, service_pids
from notifier.broker import Broker, delete_queues
from notifier.models import Notification, Platform, Target, new_id, utcnow
from notifier.settings import load_settings
from notifier.store.factory import open_store
from notifier_tools import procs
from notifier_tools.bench.common import create_database, drop_database
from notifier_tools.procs import free_port

PG_ADMIN = os.environ.get(
    "NOTIFIER_TEST_POSTGRES_URL", "postgresql://notifier:notifier@127.0.0.1:5432/notifier"
)
AMQP = os.environ.get("NOTIFIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def note(i: int) -> Notification:
    now = utcnow()
    platform = Platform.APNS if i % 2 else Platform.FCM
    token = secrets.token_hex(32) if platform is Platform.APNS else f"fcm-bench-{i}"
    return Notification(
        id=new_id(),
        app="bench",
        target=Target(platform, token),
        created_at=now,
        updated_at=now,
        title="Bench",
        body="hello",
        data={"i": str(i)},
    )


class Workers:
    def __init__(self, env: dict[str, str], n: int, concurrency: int) -> None:
        self.env, self.n, self.concurrency = env, n, concurrency
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    async def start(self) -> None:
        for _ in range(self.n):
            port = free_port()
            argv = [sys.executable, "-m", "notifier", "worker", "--metrics-port", str(port)]
            argv += ["--concurrency", str(self.concurrency)]
            env = {**os.environ, **self.env}
            self.procs.append(procs.spawn(argv, log=Path(os.devnull), env=env))
            self.ports.append(port)
        for port, proc in zip(self.ports, self.procs, strict=True):
            await procs.await_healthy(f"http://127.0.0.1:{port}/health", alive=proc, name="worker")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers used so far."""
        return sum(family_cpu_seconds(p.pid) for p in self.procs)

    def rss_mb(self) -> list[float]:
        return [psutil.Process(p.pid).memory_info().rss / 2**20 for p in self.procs]

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # all at once: they drain in parallel
        for p in self.procs:
            await procs.astop(p)


def others_cpu_seconds(emulator_pid: int) -> dict[str, float]:
    """CPU time so far of the other parts on this machine (each with its child processes)."""
    pids = {**service_pids(), "emulator": emulator_pid}
    return {name: family_cpu_seconds(pid) if pid else 0.0 for name, pid in pids.items()}


async def insert_publish(store: Any, broker: Broker, notes: list[Notification]) -> None:
    for start in range(0, len(notes), 500):
        chunk = notes[start : start + 500]
        await store.insert_many(chunk)
        ids = [n.id for n in chunk]
        await broker.publish(ids)
        await store.mark_published(ids, utcnow())


async def sent_times(db_url: str, ids: list[str]) -> list[tuple[float, float]]:
    conn = await asyncpg.connect(db_url)
    rows = await conn.fetch(
        "SELECT extract(epoch from created_at) c, extract(epoch from sent_at) s "
        "FROM notifications WHERE id = ANY($1::text[]) AND status = 'sent'",
        ids,
    )
    await conn.close()
    return [(float(r["c"]), float(r["s"])) for r in rows]


async def wait_sent(
    db_url: str, ids: list[str], emu: EmulatorHandle, pushed_before: int, timeout: float = 300
) -> list[tuple[float, float]]:
    """Wait until the emulator received ``ids`` and their outcomes are stored; read the times.

    Progress is the emulator's count of distinct ids pushed (a counter it keeps), so the
    bench adds no work to what it measures. It used to poll the workers' ``/stats``, which
    made each worker recount the backlog in PostgreSQL once a second.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    target = pushed_before + len(ids)
    while loop.time() < deadline:
        if await emu.control.pushed() >= target:
            break
        await asyncio.sleep(0.2)
    while True:  # then the last outcome writes
        rows = await sent_times(db_url, ids)
        if len(rows) >= len(ids) or loop.time() >= deadline:
            return rows
        await asyncio.sleep(0.05)


async def run_one(args: argparse.Namespace, n_workers: int, emu: EmulatorHandle) -> dict[str, Any]:
    db, db_url = await create_database(PG_ADMIN)
    queue = f"bench.{os.getpid()}.{secrets.token_hex(3)}"
    env = {
        "NOTIFIER_STORE_URL": db_url,
        "NOTIFIER_AMQP_URL": AMQP,
        "NOTIFIER_QUEUE": queue,
        "NOTIFIER_LOG_LEVEL": "warning",
        **emu.env,
    }
    settings = load_settings(env)
    store = await open_store(settings)
    broker = await Broker.connect(settings)
    workers = Workers(env, n_workers, args.concurrency)
    try:
        notes = [note(i) for i in range(args.count)]
        before = await emu.control.pushed()
        await insert_publish(store, broker, notes)
        await workers.start()
        rss: list[float] = []

        async def sample() -> None:
            while True:
                rss.append(max(workers.rss_mb()))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        cpu_start, others_start = workers.cpu_seconds(), others_cpu_seconds(emu.pid)
        rows = await wait_sent(db_url, [n.id for n in notes], emu, before)
        cpu = workers.cpu_seconds() - cpu_start
        others = {k: v - others_start[k] for k, v in others_cpu_seconds(emu.pid).items()}
        sent = sorted(s for _, s in rows)
        drain = sent[-1] - sent[0] if len(sent) > 1 else float("nan")
        # steady phase: a fixed rate, latency created -> sent
        steady: list[Notification] = []
        before = await emu.control.pushed()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        per_tick = max(1, int(args.rate / 20))
        while loop.time() - t0 < args.steady_seconds:
            chunk = [note(len(steady) + i) for i in range(per_tick)]
            await insert_publish(store, broker, chunk)
            steady += chunk
            await asyncio.sleep(max(0.0, t0 + len(steady) / args.rate - loop.time()))
        srows = await wait_sent(db_url, [n.id for n in steady], emu, before)
        sampler.cancel()
        lat = sorted((s - c) * 1000 for c, s in srows)
        return {
            "workers": n_workers,
            "count": args.count,
            "delivered": len(rows),
            "drain_s": drain,
            "per_s": len(rows) / drain if drain else float("nan"),
            "steady_rate": len(steady) / args.steady_seconds,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "rss_mb": max(rss) if rss else float("nan"),
            "cpu_ms": 1000 * cpu / len(rows) if rows else float("nan"),
            "others_cpu_ms": {k: 1000 * v / max(1, len(rows)) for k, v in others.items()},
        }
    finally:
        await workers.stop()
        await broker.close()
        await store.close()
        await drop_database(PG_ADMIN, db)
        await delete_queues(settings)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--steady-seconds", type=float, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        async with run_emulator(Path(keys)) as emu:
            results = [await run_one(args, n, emu) for n in args.workers]
    print(
        f"{'workers':>7} {'delivered':>9} {'drain s':>8} {'deliv/s':>8} "
        f"{'steady/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'CPU ms':>7}"
    )
    for r in results:
        print(
            f"{r['workers']:>7} {r['delivered']:>9} {r['drain_s']:>8.2f} {r['per_s']:>8.0f} "
            f"{r['steady_rate']:>8.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
            f"{r['rss_mb']:>7.1f} {r['cpu_ms']:>7.3f}"
        )
    print("CPU ms per delivery during the drain (user + system, all processes of the part):")
    for r in results:
        parts = "  ".join(f"{k} {v:.3f}" for k, v in r["others_cpu_ms"].items())
        print(f"  {r['workers']} workers: workers {r['cpu_ms']:.3f}  {parts}")


if __name__ == "__main__":
    asyncio.run(main())
