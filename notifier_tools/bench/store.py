"""Store throughput figures on PostgreSQL: batch inserts, claims and completes, sweeps.

Usage: .venv/bin/python -m notifier_tools.bench.store [--url postgresql://...] [--count 20000]
Creates a scratch database next to the one in --url, prints the figures, drops it.
The product targets >= 10,000 notifications/s accepted via batch and >= 3,000 deliveries/s.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from datetime import timedelta

from notifier.models import AttemptOutcome, Notification, Platform, Status, Target, new_id, utcnow
from notifier.store.base import Outcome
from notifier.store.postgres import PostgresStore
from notifier_tools.bench.common import create_database, drop_database

DEFAULT_URL = "postgresql://notifier:notifier@127.0.0.1:5432/notifier"


def _notifications(count: int) -> list[Notification]:
    now = utcnow()
    return [
        Notification(
            id=new_id(),
            app="bench",
            target=Target(Platform.FCM, secrets.token_hex(32)),
            created_at=now,
            updated_at=now,
            user_id=f"u{i % 1000}",
            title="Hello",
            body="A benchmark notification",
            data={"k": "v", "n": str(i)},
        )
        for i in range(count)
    ]


async def _bench_inserts(store: PostgresStore, items: list[Notification], tasks: int) -> float:
    batches = [items[i : i + 500] for i in range(0, len(items), 500)]
    queue = iter(batches)

    async def run() -> None:
        for batch in queue:
            await store.insert_many(batch)

    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(tasks)))
    return len(items) / (time.perf_counter() - start)


async def _bench_deliveries(store: PostgresStore, ids: list[str], tasks: int) -> float:
    """Claim each document, then complete in batches of 50 (what a worker's writer does)."""
    queue = iter(ids)

    async def run(worker: str) -> None:
        done: list[tuple[str, Outcome]] = []
        for id in queue:
            now = utcnow()
            if (await store.claim(id, worker, now, 300)).won:
                done.append((id, Outcome(Status.SENT, AttemptOutcome.SENT, utcnow(), 200)))
            if len(done) >= 50:
                await store.complete_many(worker, done)
                done = []
        if done:
            await store.complete_many(worker, done)

    start = time.perf_counter()
    await asyncio.gather(*(run(f"bench-{i}") for i in range(tasks)))
    return len(ids) / (time.perf_counter() - start)


async def _bench_sweep(store: PostgresStore) -> tuple[int, float]:
    later = utcnow() + timedelta(hours=1)
    start = time.perf_counter()
    taken = await store.take_due_for_publish(
        later, limit=1000, unpublished_grace_seconds=10, stale_published_seconds=60
    )
    return len(taken), time.perf_counter() - start


async def main(url: str, count: int) -> None:
    name, store_url = await create_database(url)
    try:
        store = await PostgresStore.connect(store_url)
        try:
            await store.setup()
            items = _notifications(count)
            rate = await _bench_inserts(store, items, tasks=4)
            print(f"insert_many (batches of 500, 4 concurrent): {rate:,.0f} notifications/s")
            sweep_n, sweep_s = await _bench_sweep(store)
            print(f"take_due_for_publish: {sweep_n} ids in {sweep_s * 1000:.1f} ms")
            rate = await _bench_deliveries(store, [n.id for n in items], tasks=10)
            print(f"claim + complete_many(50) (10 concurrent): {rate:,.0f} deliveries/s")
        finally:
            await store.close()
    finally:
        await drop_database(url, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--count", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.count))
