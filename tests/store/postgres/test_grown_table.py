"""Query plans on a grown table (issue 17): what the planner picks once final rows dominate.

A store that has run for a month holds millions of final notifications and a backlog of a
few thousand open ones. Loading 10M rows in a test is too slow; the plans depend on the
proportions, not the count, so the table here has the shape of a grown one at 200,000 rows,
ANALYZEd: about 90 % sent, 6 % failed, 3 % expired, 1 % cancelled, over apps of different
sizes and 23 days, with 400 open documents at the end (0.2 %) (pending, published or not,
retrying, some under an expired lock). Each statement the API, the workers, the sweeper,
``/stats`` and ``prune`` run is planned generically (as the pool's prepared statements are
after their fifth run), run under EXPLAIN ANALYZE in a transaction that is rolled back, and
must read what it returns (or the backlog), never the final rows: no sequential scan, and
a bound on the rows its scans read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from notifier.models import Status, id_floor
from notifier.store.postgres import PostgresStore, sql
from notifier_tools.bench.explain import explain_generic
from tests.conftest import own_database

ROWS = 200_000
BACKLOG = 400
# g: 1..ROWS, in creation order (ids sort by it); the last BACKLOG rows are open.
_STATUS = f"""CASE
    WHEN g > {ROWS - BACKLOG} THEN (ARRAY['pending', 'pending', 'retrying', 'scheduled'])[g % 4 + 1]
    WHEN g % 100 < 90 THEN 'sent' WHEN g % 100 < 96 THEN 'failed'
    WHEN g % 100 < 99 THEN 'expired' ELSE 'cancelled' END"""
_APP = "(ARRAY['shop', 'shop', 'shop', 'shop', 'chat', 'chat', 'bank', 'health'])[g % 8 + 1]"
# ids are UUIDv7 text of the creation time, as the API makes them (prune's floor relies on it)
_HEX_MS = "lpad(to_hex((extract(epoch FROM c) * 1000)::bigint), 12, '0')"
FILL = f"""
INSERT INTO notifications (id, app, user_id, target_platform, target_token, status, priority,
    lane, data, history, attempts, created_at, updated_at, published_at, next_attempt_at,
    locked_by, locked_at, lock_expiry)
SELECT substr({_HEX_MS}, 1, 8) || '-' || substr({_HEX_MS}, 9, 4) || '-7000-8000-'
         || lpad(to_hex(g), 12, '0'),
       {_APP}, 'u' || (g * 7919 % 50000),
       CASE WHEN g % 2 = 0 THEN 'fcm' ELSE 'apns' END, 't' || g, {_STATUS}, 'high',
       CASE WHEN g % 10 < 7 THEN 'bulk' ELSE 'transactional' END, '{{}}'::jsonb, '[]'::jsonb,
       1, c, c + interval '1 second',
       CASE WHEN g % 7 = 0 AND g > {ROWS - BACKLOG} THEN NULL
            ELSE c + interval '3 milliseconds' END,
       CASE WHEN g > {ROWS - BACKLOG} AND g % 4 = 1 THEN now() + interval '1 minute' END,
       CASE WHEN g > {ROWS - BACKLOG} AND g % 50 = 0 THEN 'dead-worker' END,
       CASE WHEN g > {ROWS - BACKLOG} AND g % 50 = 0 THEN now() - interval '10 minutes' END,
       CASE WHEN g > {ROWS - BACKLOG} AND g % 50 = 0 THEN now() - interval '9 minutes' END
FROM (SELECT g, now() - ({ROWS} - g) * interval '10 seconds' AS c
      FROM generate_series(1, {ROWS}) g) s
"""


@pytest.fixture(scope="module")
async def grown_url(services: None) -> AsyncIterator[str]:
    async with own_database("postgresql") as url:
        store = await PostgresStore.connect(url)
        try:
            await store.setup()
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(FILL)
            await conn.execute("VACUUM (ANALYZE) notifications")
        finally:
            await conn.close()
        yield url


def _rows_read(node: dict[str, Any]) -> tuple[int, list[str]]:
    """Rows the plan's scans read (returned and filtered out, over every loop), and the scans."""
    total, scans = 0, []
    if "Scan" in node["Node Type"] and node["Node Type"] not in ("CTE Scan", "Function Scan"):
        loops = node.get("Actual Loops", 1)
        returned = node.get("Actual Rows", 0) * loops
        removed = node.get("Rows Removed by Filter", 0) + node.get(
            "Rows Removed by Index Recheck", 0
        )
        total += int(returned + removed)
        scans.append(f"{node['Node Type']} {node.get('Index Name', node.get('Relation Name'))}")
    for child in node.get("Plans", []):
        more, names = _rows_read(child)
        total += more
        scans += names
    return total, scans


async def _explain(url: str, query: str, *args: Any) -> tuple[int, list[str], str]:
    """Plan ``query`` as a prepared statement under force_generic_plan (EXPLAIN of a
    statement with parameters would plan it for their values), run it with ``args``."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        plan = (await explain_generic(conn, query, args))["Plan"]
    finally:
        await conn.close()
    read, scans = _rows_read(plan)
    return read, scans, json.dumps(plan, indent=1)


async def _open_ids(url: str, count: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id FROM notifications WHERE status = 'pending' ORDER BY id LIMIT $1", count
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


def _hot_statements(now: datetime, ids: list[str]) -> list[tuple[str, str, tuple[Any, ...], int]]:
    """(name, statement, arguments, most rows its scans may read)."""
    day_old = now - timedelta(days=22)  # prune with 22 days of retention: the oldest day
    n = len(ids)
    return [
        (
            "take_due_for_publish",
            sql.TAKE_DUE_FOR_PUBLISH,
            (now, 500, now - timedelta(seconds=30), now - timedelta(minutes=10)),
            BACKLOG + 1_000,
        ),
        ("recover_expired_locks", sql.RECOVER_EXPIRED_LOCKS, (now, 500, False, "{}"), BACKLOG),
        ("counts_by_status(open_only)", sql.COUNTS_OPEN, (), BACKLOG),
        ("bulk_apps", sql.BULK_APPS, (), 100),
        ("claim_many", sql.CLAIM_MANY, (ids, "w", now, now + timedelta(seconds=30), "[]"), 3 * n),
        (
            "complete_many",
            sql.COMPLETE_MANY,
            ("w", ids, ["sent"] * n, [now] * n, [None] * n, [None] * n, [None] * n, ["{}"] * n),
            3 * n,
        ),
        ("mark_published", sql.MARK_PUBLISHED, (ids, now), 3 * n),
        ("get", sql.GET_FOR_APP, (ids[0], "shop"), 2),
        ("delete_final", sql.DELETE_FINAL, (id_floor(day_old), day_old, 5000), 2 * 5_000 + 100),
    ]


async def test_hot_statements_read_the_backlog_not_the_final_rows(grown_url: str) -> None:
    ids = await _open_ids(grown_url, 50)
    conn = await asyncpg.connect(grown_url)
    try:
        now = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    for name, query, args, most in _hot_statements(now, ids):
        read, scans, plan = await _explain(grown_url, query, *args)
        assert not any(s.startswith("Seq Scan") for s in scans), (name, plan)
        assert read <= most, (name, read, scans, plan)


@pytest.mark.parametrize("status", list(Status))
async def test_a_page_of_one_status_reads_a_page_not_the_app(
    grown_url: str, status: Status
) -> None:
    """GET /v1/notifications?status=...: the smallest app's newest page of each status.
    Before the unsent-final index, a page of failed ones walked the primary key backwards
    past every sent row (seconds at 1M rows)."""
    query = sql.list_notifications(status=status, by_user=False, after=False)
    read, scans, plan = await _explain(grown_url, query, "health", 51)
    assert not any(s.startswith("Seq Scan") for s in scans), plan
    # a page (and what a page of sent ones skips), or the backlog for an open status
    assert read <= BACKLOG + 1_000, (status, read, scans, plan)


async def test_a_users_page_reads_the_users_rows(grown_url: str) -> None:
    query = sql.list_notifications(status=None, by_user=True, after=False)
    read, scans, plan = await _explain(grown_url, query, "shop", 51, "u7919")
    assert read <= 100, (read, scans, plan)
