"""EXPLAIN ANALYZE of the statements the API, the workers, the sweeper, /stats and prune run.

Usage: .venv/bin/python -m notifier_tools.bench.explain --url postgresql://.../db [--plans]

For a grown store (issue 17: ``notifier bench --preload N`` first): one line a statement
with its execution time, shared buffers touched and the scans it used; ``--plans`` prints
the whole plans. Writes run in a transaction that is rolled back, so nothing changes.
Each statement is planned as the store's pool plans it after its fifth run: generically
(``plan_cache_mode = force_generic_plan``), and run three times (the best time is shown).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
from datetime import timedelta
from typing import Any

import asyncpg

from notifier.models import Status, id_floor, utcnow
from notifier.store.postgres import sql

_NAMES = itertools.count()


class _Rollback(Exception):
    pass


def _statements(sample: dict[str, Any]) -> list[tuple[str, str, tuple[Any, ...]]]:
    now = utcnow()
    ids = sample["ids"]
    app, user = sample["app"], sample["user"]
    retention = now - timedelta(days=29)

    def page(status: Status | None, *, by_user: bool) -> str:
        return sql.list_notifications(status=status, by_user=by_user, after=False)

    return [
        (
            "sweeper: take_due_for_publish",
            sql.TAKE_DUE_FOR_PUBLISH,
            (now, 500, now - timedelta(seconds=30), now - timedelta(seconds=600)),
        ),
        ("sweeper: recover_expired_locks", sql.RECOVER_EXPIRED_LOCKS, (now, 500, False, "{}")),
        ("/stats: counts_by_status(open_only)", sql.COUNTS_OPEN, ()),
        ("worker: bulk_apps", sql.BULK_APPS, ()),
        (
            "worker: claim_many (50 ids)",
            sql.CLAIM_MANY,
            (ids, "explain", now, now + timedelta(seconds=30), "[]"),
        ),
        (
            "worker: complete_many (50 ids)",
            sql.COMPLETE_MANY,
            (
                "explain",
                ids,
                ["sent"] * 50,
                [now] * 50,
                [None] * 50,
                [None] * 50,
                [None] * 50,
                ["{}"] * 50,
            ),
        ),
        ("api: get", sql.GET_FOR_APP, (ids[0], app)),
        ("api: list (app)", page(None, by_user=False), (app, 51)),
        ("api: list (app, user_id)", page(None, by_user=True), (app, 51, user)),
        ("api: list (app, status=failed)", page(Status.FAILED, by_user=False), (app, 51)),
        ("api: list (app, status=pending)", page(Status.PENDING, by_user=False), (app, 51)),
        ("api: list (app, status=sent)", page(Status.SENT, by_user=False), (app, 51)),
        ("api: mark_published (50 ids)", sql.MARK_PUBLISHED, (ids, now)),
        ("prune: delete_final (5000)", sql.DELETE_FINAL, (id_floor(retention), retention, 5000)),
        ("bench: counts_by_status(app)", sql.COUNTS_FOR_APP, (app,)),
        ("(not run by anything) counts_by_status()", sql.COUNTS, ()),
    ]


def _summary(plan: dict[str, Any]) -> tuple[str, int]:
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if "Scan" in kind:
            scans.append(f"{kind}({node.get('Index Name', node.get('Relation Name', ''))})")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
    return ", ".join(dict.fromkeys(scans)), buffers


async def explain_generic(
    conn: asyncpg.Connection, query: str, args: tuple[Any, ...]
) -> dict[str, Any]:
    """EXPLAIN ANALYZE (with buffers) of ``query`` run with ``args``, rolled back: prepared,
    so planned generically when ``conn`` has ``plan_cache_mode = force_generic_plan``.
    (EXPLAIN of a statement with parameters plans it for their values; EXECUTE takes
    literals, quoted by the server.)"""
    name = f"q{next(_NAMES)}"
    types = [t.name for t in (await conn.prepare(query)).get_parameters()]
    run = query
    if types:
        await conn.execute(f"PREPARE {name}({', '.join(types)}) AS {query}")
        literals = [
            f"{await conn.fetchval(f'SELECT quote_nullable($1::{t}::text)', a)}::{t}"
            for t, a in zip(types, args, strict=True)
        ]
        run = f"EXECUTE {name}({', '.join(literals)})"
    result: dict[str, Any] = {}
    try:
        async with conn.transaction():
            explained = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + run)
            result = json.loads(explained)[0]
            raise _Rollback
    except _Rollback:
        pass
    return result


async def main(url: str, show_plans: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = await conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'notifications'"
        )
        # a recent app and user, and 50 recent ids, as the pipeline would ask for
        recent = await conn.fetch(
            "SELECT id, app, user_id FROM notifications ORDER BY id DESC LIMIT 50"
        )
        if len(recent) < 50:
            raise SystemExit("explain: needs at least 50 notifications in the store")
        sample = {
            "ids": [r["id"] for r in recent],
            "app": recent[0]["app"],
            "user": next((r["user_id"] for r in recent if r["user_id"]), "nobody"),
        }
        print(f"notifications: ~{rows:,} rows")
        for name, query, args in _statements(sample):
            best: dict[str, Any] | None = None
            for _ in range(3):
                plan = await explain_generic(conn, query, args)
                if best is None or plan["Execution Time"] < best["Execution Time"]:
                    best = plan
            assert best is not None
            scans, buffers = _summary(best)
            print(f"{name:<42} {best['Execution Time']:9.2f} ms  {buffers:>8} buffers  {scans}")
            if show_plans:
                print(re.sub(r"^", "    ", json.dumps(best["Plan"], indent=1), flags=re.M))
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--plans", action="store_true", help="print every plan in full")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.plans))
