"""``notifier bench --preload``: final notifications of realistic shape, loaded as the store
would read them (issue 17)."""

from __future__ import annotations

import random
from datetime import timedelta

from loadtest.preload import fast_records, notification_of_record, preload
from notifier.models import FINAL_STATUSES, Lane, Platform, Status, id_floor, utcnow
from notifier.store.postgres import PostgresStore


def test_records_are_final_notifications_in_creation_order() -> None:
    start = utcnow() - timedelta(days=30)
    records = fast_records(0, 4000, start=start, step=timedelta(minutes=10), rnd=random.Random(7))
    found = [notification_of_record(r) for r in records]
    assert all(n.status in FINAL_STATUSES for n in found)
    assert {n.status for n in found} == set(FINAL_STATUSES)
    assert {n.target.platform for n in found} == set(Platform)
    assert {n.lane for n in found} == set(Lane)
    assert len({n.app for n in found}) >= 5
    ids = [n.id for n in found]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for n in found:  # a UUIDv7 of its creation time: prune's id floor holds
        assert id_floor(n.created_at) <= n.id < id_floor(n.created_at + timedelta(milliseconds=1))
        assert n.locked_by is None and n.updated_at >= n.created_at
        assert (n.sent_at is not None) == (n.status is Status.SENT)
        assert (n.status is Status.CANCELLED) == (n.history == [])


async def test_preload_copies_rows_the_store_reads(fresh_pg_url: str) -> None:
    lines: list[str] = []
    rate = await preload(fresh_pg_url, 3000, days=2, seed=1, say=lines.append)
    assert rate > 0 and any("rows/s" in line for line in lines)
    store = await PostgresStore.connect(fresh_pg_url)
    try:
        counts = await store.counts_by_status()
        assert sum(counts.values()) == 3000
        assert all(counts[s] == 0 for s in Status if s not in FINAL_STATUSES)
        page = await store.list_notifications("shop", limit=5)
        assert len(page.items) == 5 and page.items[0].created_at > page.items[-1].created_at
        # a day of retention prunes about half of two days' load, and only that
        deleted = await store.delete_final(utcnow() - timedelta(days=1), limit=10_000)
        assert 1000 < deleted < 2000
    finally:
        await store.close()


def test_bench_takes_preload_alone_or_with_a_run_and_needs_one_of_them() -> None:
    from loadtest.bench_args import check_args as _check_args
    from loadtest.bench_args import parser as _parser

    def problem(*argv: str) -> str | None:
        return _check_args(_parser().parse_args(list(argv)))

    assert problem("--preload", "1000") is None
    assert problem("--preload", "1000", "--notifications", "10") is None
    assert "--notifications (or --preload) is required" in str(problem())
    assert "--preload must be" in str(problem("--preload", "0"))
    assert "--preload-days" in str(problem("--preload", "5", "--preload-days", "0"))
