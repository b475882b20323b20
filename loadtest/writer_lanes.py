"""How long a transactional write waits in the API's writer while campaigns write batches.

``python -m loadtest.writer_lanes``: the API's :class:`~api.writer.Writer` against a real
store and RabbitMQ, in one process, no HTTP. ``--campaigns`` tasks each write 500-item
bulk batches back to back (what ``notifier bench`` does through the batch endpoint); a
probe writes one transactional notification every ``--probe-interval`` seconds and times
``Writer.write`` (insert committed and publish confirmed). Prints the probe's p50, p95,
p99 and max and the campaigns' rate. Its own PostgreSQL database (or MongoDB database)
and queues, dropped at the end; nothing consumes the queues. ``--one-queue`` runs the
writer as it was before lanes (one queue of rounds for every request), for comparison
under the same load.

``--second-app``: the probe is instead a second app's 500-item bulk batch (app B of
``notifier bench --lanes``), timed the same way while the campaign's batches queue in the
same bulk rounds; ``--fifo`` forms the rounds in arrival order, as before the rounds took
the apps in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from types import MethodType
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from api.writer import BrokerLink, Writer
from notifier.broker import Broker, delete_queues
from notifier.models import Lane, Notification, Platform, Target, new_id, utcnow
from notifier.settings import load_settings
from notifier.store.batching import MicroBatcher
from notifier.store.factory import open_store

CAMPAIGN_APP = "campaign"


def _docs(n: int, lane: Lane, app: str) -> list[Notification]:
    now = utcnow()
    return [
        Notification(
            id=new_id(),
            app=app,
            target=Target(Platform.FCM, f"tok-{secrets.token_hex(8)}"),
            created_at=now,
            updated_at=now,
            title="hi",
            lane=lane,
        )
        for _ in range(n)
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _run(args: argparse.Namespace, store_url: str, queue: str) -> None:
    settings = load_settings(
        {
            "NOTIFIER_STORE_URL": store_url,
            "NOTIFIER_AMQP_URL": args.amqp_url,
            "NOTIFIER_QUEUE": queue,
        }
    )
    store = await open_store(settings)
    link = BrokerLink(settings, await Broker.connect(settings))
    writer = Writer(store, link)
    if args.one_queue:  # the writer before lanes: every request in one queue of rounds
        one = writer._rounds[Lane.TRANSACTIONAL]
        writer._rounds = dict.fromkeys(Lane, one)
    if args.fifo:  # the rounds in arrival order (MicroBatcher's own cut), before fair intake
        for rounds in writer._rounds.values():
            rounds._cut = MethodType(MicroBatcher._cut, rounds)  # type: ignore[method-assign]

    def probe() -> list[Notification]:
        if args.second_app:
            return _docs(args.batch, Lane.BULK, "second-app")
        return _docs(1, Lane.TRANSACTIONAL, "probe")

    stop = asyncio.Event()
    bulk_written = 0

    async def campaign() -> None:
        nonlocal bulk_written
        while not stop.is_set():
            await writer.write(_docs(args.batch, Lane.BULK, CAMPAIGN_APP))
            bulk_written += args.batch

    waits: list[float] = []
    try:
        await writer.write(_docs(1, Lane.TRANSACTIONAL, "probe"))  # warm the pools
        campaigns = [asyncio.create_task(campaign()) for _ in range(args.campaigns)]
        await asyncio.sleep(args.warmup)
        started, written_before = time.perf_counter(), bulk_written
        for _ in range(args.probes):
            docs = probe()
            t0 = time.perf_counter()
            await writer.write(docs)
            waits.append(time.perf_counter() - t0)
            await asyncio.sleep(args.probe_interval)
        elapsed = time.perf_counter() - started
        bulk_rate = (bulk_written - written_before) / elapsed
        stop.set()
        await asyncio.gather(*campaigns)
    finally:
        stop.set()
        await writer.close()
        await link.close()
        await store.close()
        await delete_queues(settings, [CAMPAIGN_APP, "probe", "second-app"])
    ms = [w * 1000 for w in waits]
    what = "second app's batch" if args.second_app else "transactional"
    print(
        f"{what} write ms: p50 {statistics.median(ms):.1f}  p95 {_percentile(ms, 0.95):.1f}"
        f"  p99 {_percentile(ms, 0.99):.1f}  max {max(ms):.1f}  (n={len(ms)})"
    )
    print(f"bulk written while probing: {bulk_rate:,.0f} notifications/s")


async def _main(args: argparse.Namespace) -> None:
    queue = f"bench.writer.{secrets.token_hex(4)}"
    if not args.store_url.startswith("postgresql"):
        await _run(args, args.store_url, queue)
        return
    name = f"bench_writer_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.store_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        await _run(args, urlunsplit(urlsplit(args.store_url)._replace(path=f"/{name}")), queue)
    finally:
        admin = await asyncpg.connect(args.store_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.writer_lanes", description=__doc__)
    p.add_argument(
        "--store-url",
        default="postgresql://notifier:notifier@127.0.0.1:5432/notifier",
        help="PostgreSQL: a database to create a throwaway one from; MongoDB: the database",
    )
    p.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--campaigns", type=int, default=4, help="concurrent batch writers")
    p.add_argument("--batch", type=int, default=500, help="items per campaign batch")
    p.add_argument("--probes", type=int, default=200, help="transactional writes timed")
    p.add_argument("--probe-interval", type=float, default=0.02, help="seconds between them")
    p.add_argument(
        "--one-queue",
        action="store_true",
        help="for comparison: both lanes' requests in one queue of rounds (before lanes)",
    )
    p.add_argument(
        "--second-app",
        action="store_true",
        help="time a second app's bulk batch (of --batch items) instead of a transactional one",
    )
    p.add_argument(
        "--fifo",
        action="store_true",
        help="for comparison: rounds in arrival order (before the apps took turns)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of campaign first")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
