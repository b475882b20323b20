"""What only the PostgreSQL store has to show: connection failures and its schema's indexes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from notifier.models import Lane, Platform, Status
from notifier.providers.health import HOLD_CODES
from notifier.store.base import StoreUnavailable
from notifier.store.postgres import PostgresStore, credentials, sql
from notifier.store.postgres import pool as postgres_pool
from notifier_tools.bench.explain import explain_generic
from tests.conftest import PG_ADMIN_URL
from tests.store.conftest import insert, make_notification
from tests.support import wait_for


async def test_unreachable_server_is_unavailable_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as info:
        await PostgresStore.connect("postgresql://notifier:s3cret-pw@127.0.0.1:1/notifier")
    assert "s3cret-pw" not in str(info.value)
    assert "\n" not in str(info.value)


async def test_missing_database_is_unavailable(fresh_pg_url: str) -> None:
    with pytest.raises(StoreUnavailable):
        await PostgresStore.connect(fresh_pg_url + "_missing")


async def test_schema_has_the_design_indexes(fresh_pg_url: str) -> None:
    store = await PostgresStore.connect(fresh_pg_url)
    try:
        await store.setup()
    finally:
        await store.close()
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        rows = await conn.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'notifications'")
    finally:
        await conn.close()
    defs = " | ".join(r["indexdef"] for r in rows)
    for columns in (
        "(status, next_attempt_at)",
        "(lock_expiry) WHERE ((status = ANY (ARRAY['pending'::text",
        "(app, idempotency_key) WHERE (idempotency_key IS NOT NULL)",
        "(user_id, created_at)",
        "(target_token)",
        "(app, id DESC)",
        "(app, status, id DESC) WHERE (status = ANY (ARRAY['failed'::text, 'cancelled'::text",
        "(app) WHERE ((lane = 'bulk'::text) AND",
    ):
        assert columns in defs, columns


async def test_schema_sets_autovacuum_by_few_rows_and_keeps_an_operators_own(
    fresh_pg_url: str,
) -> None:
    """A grown table is vacuumed and analyzed after a small share of its rows change (issue
    17); an operator's own autovacuum setting on the table survives the next start."""
    store = await PostgresStore.connect(fresh_pg_url)
    conn = await asyncpg.connect(fresh_pg_url)
    query = "SELECT reloptions FROM pg_class WHERE oid = 'notifications'::regclass"
    try:
        await store.setup()
        assert set(await conn.fetchval(query)) == {
            "autovacuum_vacuum_scale_factor=0.02",
            "autovacuum_vacuum_insert_scale_factor=0.02",
            "autovacuum_analyze_scale_factor=0.01",
        }
        await conn.execute(
            "ALTER TABLE notifications RESET (autovacuum_vacuum_insert_scale_factor,"
            " autovacuum_analyze_scale_factor)"
        )
        await conn.execute("ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0.1)")
        await store.setup()
        assert await conn.fetchval(query) == ["autovacuum_vacuum_scale_factor=0.1"]
    finally:
        await conn.close()
        await store.close()


async def test_a_start_on_an_existing_schema_does_not_wait_for_autovacuum(
    fresh_pg_url: str,
) -> None:
    """Every api and worker start runs setup(); on a set-up table it must take no lock that
    conflicts with autovacuum's (SHARE UPDATE EXCLUSIVE), or it cancels a running vacuum:
    on a 10M-row table each start did, and none finished (issue 17)."""
    store = await PostgresStore.connect(fresh_pg_url)
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await store.setup()
        async with conn.transaction():
            await conn.execute("LOCK TABLE notifications IN SHARE UPDATE EXCLUSIVE MODE")
            await asyncio.wait_for(store.setup(), timeout=5)
    finally:
        await conn.close()
        await store.close()


async def test_garbage_text_is_rejected_cleanly(fresh_pg_url: str, now: datetime) -> None:
    """A NUL byte (PostgreSQL text cannot hold one) reads as absent, never as a crash."""
    store = await PostgresStore.connect(fresh_pg_url)
    try:
        await store.setup()
        assert await store.get("a\x00b") is None
        assert await store.get("x", "a\x00") is None
        assert (await store.claim("a\x00b", "w", now, 30)).notification is None
        page = await store.list_notifications("a", user_id="u\x00", status=Status.PENDING)
        assert page.items == []
        [result] = await store.insert_many([make_notification(now)])
        assert result.created
    finally:
        await store.close()


async def test_store_recovers_after_the_server_drops_its_connections(fresh_pg_url: str) -> None:
    store = await PostgresStore.connect(fresh_pg_url)
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await store.setup()
        database = fresh_pg_url.rsplit("/", 1)[1]
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        # the pool's connection is dead: the next call may fail as unavailable, never otherwise
        with contextlib.suppress(StoreUnavailable):
            await store.ping()
        await wait_for(_answers(store), timeout=10, what="the store to reconnect")
    finally:
        await admin.close()
        await store.close()


def _answers(store: PostgresStore) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await store.ping()
        except StoreUnavailable:
            return False
        return True

    return check


async def test_a_query_past_its_timeout_is_unavailable(
    fresh_pg_url: str, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_pool, "COMMAND_TIMEOUT_SECONDS", 0.5)
    store = await PostgresStore.connect(fresh_pg_url)
    blocker = await asyncpg.connect(fresh_pg_url)
    try:
        await store.setup()
        [n] = await insert(store, make_notification(now))
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", n.id)
            with pytest.raises(StoreUnavailable):
                await store.claim(n.id, "w1", now, 30)
        assert (await store.claim(n.id, "w1", now, 30)).won  # the pool is still usable
    finally:
        await blocker.close()
        await store.close()


async def test_text_postgresql_cannot_hold_is_a_value_error(
    fresh_pg_url: str, now: datetime
) -> None:
    store = await PostgresStore.connect(fresh_pg_url)
    try:
        await store.setup()
        for bad in ({"title": "a\x00b"}, {"data": {"k": "\ud800"}}):
            with pytest.raises(ValueError, match="cannot be stored"):
                await store.insert_many([make_notification(now), make_notification(now, **bad)])
        assert await store.counts_by_status() == dict.fromkeys(Status, 0)  # nothing stored
        with pytest.raises(ValueError):
            await store.upsert_device("a", "tok\x00", Platform.FCM, "u1", now)
    finally:
        await store.close()


async def _analyzed_table(
    url: str,
    status: str,
    created_at: str,
    published_at: str,
    *,
    app: str = "'a'",
    lane: str = "'transactional'",
) -> asyncpg.Connection:
    """20,000 documents ``'n' || g`` (SQL expressions over ``g`` give their columns), then
    ANALYZE; the connection plans prepared statements generically, as the pool's do."""
    store = await PostgresStore.connect(url)
    try:
        await store.setup()
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    await conn.execute(
        "INSERT INTO notifications (id, app, target_platform, target_token, status, priority, "
        "lane, data, created_at, updated_at, published_at) SELECT 'n' || g, "
        f"{app}, 'fcm', 't' || g, {status}, 'high', {lane}, '{{}}'::jsonb, {created_at}, now(), "
        f"{published_at} FROM generate_series(1, 20000) g"
    )
    await conn.execute("ANALYZE notifications")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    return conn


async def test_claims_cancels_and_marks_find_rows_by_primary_key_on_an_idle_table(
    fresh_pg_url: str,
) -> None:
    """Statistics of an idle table show no open documents; a claim, a cancel and the API's
    published mark must still go by the primary key, not the open-only indexes (which a
    burst of 100,000 would make a scan: a mark read the whole backlog each time)."""
    # 20,000 documents, none open
    conn = await _analyzed_table(fresh_pg_url, "'sent'", "now()", "NULL")
    try:
        statements = (
            ("claim", sql.CLAIM_MANY),
            ("cancel", sql.CANCEL),
            ("mark", sql.MARK_PUBLISHED),
        )
        for name, query in statements:
            statement = await conn.prepare(query)
            types = [t.name for t in statement.get_parameters()]
            await conn.execute(f"PREPARE q_{name}({', '.join(types)}) AS {query}")
            nulls = ", ".join("NULL" for _ in types)
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE q_{name}({nulls})"))
            # by id (the primary key, or (app, id) for a cancel): no scan, no open-only index
            assert "Index Cond: (id = " in plan or "AND (id = $1)" in plan, plan
            assert "Seq Scan" not in plan and "notifications_open" not in plan, plan
    finally:
        await conn.close()


async def test_the_lock_recovery_reads_the_locked_not_the_backlog_on_an_idle_table(
    fresh_pg_url: str,
) -> None:
    """Statistics of an idle table show no open documents; a burst then queues 5,000
    unlocked ones and workers hold 20. The sweeper's expired-lock recovery (every second in
    every worker) must read the held ones, not walk the backlog: through an open-only index
    over every open document it read all 5,000 each time (41,000 and 105 ms a sweep in a
    60,000-notification campaign)."""
    conn = await _analyzed_table(fresh_pg_url, "'sent'", "now()", "NULL")
    try:
        await conn.execute(
            "INSERT INTO notifications (id, app, target_platform, target_token, status, "
            "priority, lane, data, created_at, updated_at, locked_by, locked_at, lock_expiry) "
            "SELECT 'b' || g, 'a', 'fcm', 't' || g, 'pending', 'high', 'bulk', '{}'::jsonb, "
            "now(), now(), CASE WHEN g <= 20 THEN 'w' END, "
            "CASE WHEN g <= 20 THEN now() - interval '1 minute' END, "
            "CASE WHEN g <= 20 THEN now() - interval '30 seconds' END "
            "FROM generate_series(1, 5000) g"
        )
        now = await conn.fetchval("SELECT now()")
        explained = await explain_generic(conn, sql.RECOVER_EXPIRED_LOCKS, (now, 500, False, "{}"))
    finally:
        await conn.close()
    plan = json.dumps(explained["Plan"], indent=1)
    assert explained["Plan"]["Actual Rows"] == 20, plan  # it recovered the held ones
    assert max(_rows_removed(explained["Plan"])) <= 20, plan


def _rows_removed(node: dict[str, Any]) -> list[int]:
    """Rows each node of a plan read and dropped by a filter."""
    removed = [int(node.get("Rows Removed by Filter", 0))]
    for child in node.get("Plans", []):
        removed += _rows_removed(child)
    return removed


class _Rollback(Exception):
    pass


async def test_the_sweepers_take_reads_what_it_publishes_not_the_backlog(
    fresh_pg_url: str,
) -> None:
    """A burst leaves 20,000 published, unclaimed documents in the queue; a sweeper round
    (every second, in every worker) must not read them all to find the few it publishes."""
    published = "CASE WHEN g % 1000 = 0 THEN NULL ELSE now() - interval '50 seconds' END"
    conn = await _analyzed_table(
        fresh_pg_url, "'pending'", "now() - interval '1 minute'", published
    )
    try:
        now = await conn.fetchval("SELECT now()")
        statement = await conn.prepare("EXPLAIN (ANALYZE) " + sql.TAKE_DUE_FOR_PUBLISH)
        with contextlib.suppress(_Rollback):
            async with conn.transaction():
                rows = await statement.fetch(
                    now, 500, now - timedelta(seconds=30), now - timedelta(hours=24)
                )
                raise _Rollback
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "Seq Scan" not in plan, plan
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert max(removed, default=0) < 100, plan
    store = await PostgresStore.connect(fresh_pg_url)
    try:  # and it takes exactly the 20 never published
        taken = await store.take_due_for_publish(
            now, limit=500, unpublished_grace_seconds=30, stale_published_seconds=24 * 3600
        )
    finally:
        await store.close()
    assert sorted(w.id for w in taken) == sorted(f"n{g}" for g in range(1000, 20001, 1000))


async def test_bulk_apps_reads_one_index_entry_per_app_not_the_bulk_backlog(
    fresh_pg_url: str,
) -> None:
    """Every worker asks every few seconds while a campaign of thousands is queued: the
    loose index scan reads one entry of notifications_open_bulk_app per app listed."""
    # 20,000 documents of 4 apps, 1 in 5 final: app0 and app2 all bulk, app1 a third bulk, app3
    # transactional only; so ~7,700 open bulk documents
    app = "'app' || (g % 4)"
    lane = "CASE WHEN g % 4 = 3 OR (g % 4 = 1 AND g % 3 <> 0) THEN 'transactional' ELSE 'bulk' END"
    status = "CASE WHEN g % 5 = 0 THEN 'sent' ELSE 'pending' END"
    conn = await _analyzed_table(fresh_pg_url, status, "now()", "NULL", app=app, lane=lane)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE) " + sql.BULK_APPS)
        expected = await conn.fetch(
            "SELECT DISTINCT app FROM notifications WHERE lane = 'bulk' "
            "AND status IN ('pending', 'scheduled', 'retrying') ORDER BY app"
        )
    finally:
        await conn.close()
    plan = "\n".join(r[0] for r in rows)
    assert "Seq Scan" not in plan and "notifications_open_bulk_app" in plan, plan
    # "rows" is per loop (PostgreSQL 18 shows it with decimals)
    per_loop = re.findall(r"Scan using notifications_open_bulk_app .*actual .*rows=([\d.]+)", plan)
    assert per_loop and all(float(rows) <= 1 for rows in per_loop), plan
    store = await PostgresStore.connect(fresh_pg_url)
    try:
        listed = await store.bulk_apps()
    finally:
        await store.close()
    assert listed == [r["app"] for r in expected] == ["app0", "app1", "app2"]


async def test_setup_adds_the_lane_to_a_table_from_before_the_lanes(
    fresh_pg_url: str, now: datetime
) -> None:
    """An existing database gains the column (its rows transactional) and the index at the
    next start; a second setup changes nothing."""
    store = await PostgresStore.connect(fresh_pg_url)
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await store.setup()
        [old] = await insert(store, make_notification(now, lane=Lane.BULK))
        await conn.execute("ALTER TABLE notifications DROP COLUMN lane")  # as before the lanes
        await store.setup()
        await store.setup()
        got = await store.get(old.id)
        assert got is not None and got.lane is Lane.TRANSACTIONAL
        await insert(store, make_notification(now, app="shop", lane=Lane.BULK))
        assert await store.bulk_apps() == ["shop"]
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE indexname = 'notifications_open_bulk_app'"
        )
        assert len(indexes) == 1
    finally:
        await conn.close()
        await store.close()


async def test_release_held_reads_the_open_index_not_the_table(fresh_pg_url: str) -> None:
    """A credential's release (issue 16) runs in every worker on a change or a heal: it
    reads the not-yet-due retrying backlog by the open-status index, never the table of
    final documents (here 19,800 sent, 200 held)."""
    status = "CASE WHEN g % 100 = 0 THEN 'retrying' ELSE 'sent' END"
    conn = await _analyzed_table(fresh_pg_url, status, "now()", "NULL", app="'app' || (g % 2)")
    try:
        await conn.execute(
            "UPDATE notifications SET next_attempt_at = now() + interval '10 minutes', "
            'last_error = \'{"code": "credential_unhealthy", "message": "held"}\'::jsonb '
            "WHERE status = 'retrying'"
        )
        await conn.execute("ANALYZE notifications")
        now = await conn.fetchval("SELECT now()")
        codes = sorted(HOLD_CODES)
        plans = []
        for query, args in (
            (credentials.RELEASE_HELD_OF_APP, ("fcm", now, codes, "app0")),
            (credentials.RELEASE_HELD, ("fcm", now, codes)),
        ):
            statement = await conn.prepare("EXPLAIN (ANALYZE) " + query)
            with contextlib.suppress(_Rollback):
                async with conn.transaction():
                    plans.append("\n".join(r[0] for r in await statement.fetch(*args)))
                    raise _Rollback
    finally:
        await conn.close()
    for plan in plans:
        assert "Seq Scan" not in plan, plan
        assert "notifications_open_status_next_attempt" in plan, plan
