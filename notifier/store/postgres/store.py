"""The notification store on PostgreSQL, through an asyncpg connection pool.

Same semantics as the MongoDB store (the contract suite holds both): every race is settled
by one conditional ``UPDATE ... RETURNING``; bulk paths are one statement over ``unnest``
arrays; sweeper batches use ``FOR UPDATE SKIP LOCKED`` so concurrent sweepers take disjoint
sets. The SQL lives in :mod:`notifier.store.postgres.sql`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from notifier.models import (
    Attempt,
    Device,
    Lane,
    Notification,
    Platform,
    Status,
    Wake,
    id_floor,
)
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import (
    MISSING,
    OUTCOME_UNKNOWN,
    ApiKeyInfo,
    ClaimResult,
    InsertResult,
    Outcome,
    Page,
    RecoveredLock,
    StoreUnavailable,
    is_api_key_id,
)
from notifier.store.postgres import credentials, sql
from notifier.store.postgres.credentials import CredentialStoreMixin
from notifier.store.postgres.pool import create_pool, is_unavailable
from notifier.store.postgres.rows import (
    check_storable,
    device_from_row,
    dumps,
    insert_columns,
    notification_from_row,
    outcome_columns,
    storable,
    wake_from_row,
)
from notifier.store.semantics import (
    SharedStoreLogic,
    by_requested_key,
    by_user,
    classify_miss,
    first_of_each_key,
    insert_results,
    landed_before,
    zero_filled_counts,
)


class PostgresStore(CredentialStoreMixin, SharedStoreLogic):
    """:class:`~notifier.store.base.NotificationStore` on PostgreSQL."""

    kind = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        """Open the pool; :class:`StoreUnavailable` (without the password) if unreachable."""
        pool = await create_pool(url)
        return cls(pool)

    # -- plumbing ----------------------------------------------------------------------------------
    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        # No acquire timeout (it costs a task per query): every holder frees its connection
        # within the command timeout, so waiting for one is bounded anyway.
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except Exception as exc:
            if is_unavailable(exc):
                raise StoreUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc
            raise

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        async with self._conn() as conn:
            return list(await conn.fetch(query, *args))

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchrow(query, *args)

    async def _execute(self, query: str, *args: Any) -> str:
        async with self._conn() as conn:
            return str(await conn.execute(query, *args))

    # -- lifetime ----------------------------------------------------------------------------------
    async def setup(self) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", sql.SETUP_LOCK_KEY)
            await conn.execute(sql.SCHEMA)
            await conn.execute(credentials.SCHEMA)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        await self._execute("SELECT 1")

    # -- API side ----------------------------------------------------------------------------------
    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        for n in notifications:
            check_storable(n)
        to_insert, first_of_key = first_of_each_key(notifications)
        created: set[str] = set()
        if to_insert:
            rows = await self._fetch(sql.INSERT_MANY, *insert_columns(to_insert))
            created = {r["id"] for r in rows}
        stored = await self._stored_for_keys(
            [n for n in to_insert if n.id not in created and n.idempotency_key is not None]
        )
        return insert_results(notifications, first_of_key, created, stored)

    async def _stored_for_keys(
        self, conflicting: Sequence[Notification]
    ) -> dict[tuple[str, str], Notification]:
        if not conflicting:
            return {}
        rows = await self._fetch(
            sql.SELECT_BY_KEYS,
            [n.app for n in conflicting],
            [n.idempotency_key for n in conflicting],
        )
        found = (notification_from_row(r) for r in rows)
        return {(n.app, n.idempotency_key or ""): n for n in found}

    async def get(self, id: str, app: str | None = None) -> Notification | None:
        if not storable(id, app):
            return None
        if app is None:
            row = await self._fetchrow(sql.GET, id)
        else:
            row = await self._fetchrow(sql.GET_FOR_APP, id, app)
        return notification_from_row(row) if row is not None else None

    async def list_notifications(
        self,
        app: str,
        *,
        user_id: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page:
        limit = max(1, int(limit))
        if not storable(app, user_id, after):
            return Page(items=[], next=None)
        args: list[Any] = [app, limit + 1]
        args += [v for v in (user_id, after) if v is not None]
        query = sql.list_notifications(
            status=status, by_user=user_id is not None, after=after is not None
        )
        rows = await self._fetch(query, *args)
        items = [notification_from_row(r) for r in rows[:limit]]
        return Page(items=items, next=items[-1].id if len(rows) > limit else None)

    async def list_by_idempotency_keys(
        self, app: str, keys: Sequence[str]
    ) -> dict[str, list[Notification]]:
        wanted = [k for k in dict.fromkeys(keys) if storable(k)]
        if not wanted or not storable(app):
            return {}
        rows = await self._fetch(sql.LIST_BY_KEYS, app, wanted)
        return by_requested_key(wanted, (notification_from_row(r) for r in rows))

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        if ids:
            await self._execute(sql.MARK_PUBLISHED, list(ids), at)

    async def _cancel_if_open(self, id: str, app: str, now: datetime) -> Notification | None:
        if not storable(id, app):
            return None
        row = await self._fetchrow(sql.CANCEL, id, app, now)
        return notification_from_row(row) if row is not None else None

    # -- worker side -------------------------------------------------------------------------------
    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        results = dict.fromkeys(ids, MISSING)
        wanted = [id for id in results if storable(id)]
        if not wanted:
            return results
        attempt = Attempt(worker=worker_id, started_at=now)
        rows = await self._fetch(
            sql.CLAIM_MANY,
            wanted,
            worker_id,
            now,
            now + timedelta(seconds=lock_seconds),
            dumps([attempt.to_dict()]),
        )
        for row in rows:
            current = notification_from_row(row)
            won = row["won"]
            results[current.id] = (
                ClaimResult(current) if won else ClaimResult(None, classify_miss(current, now))
            )
        return results

    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        if not items:
            return []
        rows = await self._fetch(sql.COMPLETE_MANY, worker_id, *outcome_columns(items))
        done = {r["id"] for r in rows}
        missed = [id for id, _ in items if id not in done]
        if missed:  # lock lost, or an earlier try of this write landed: one read tells
            current = await self._fetch(sql.GET_MANY, missed)
            found = {r["id"]: notification_from_row(r) for r in current}
            done |= {id for id, o in items if landed_before(found.get(id), worker_id, o)}
        return [id in done for id, _ in items]

    # -- sweeper -----------------------------------------------------------------------------------
    async def take_due_for_publish(
        self,
        now: datetime,
        *,
        limit: int,
        unpublished_grace_seconds: float,
        stale_published_seconds: float,
    ) -> list[Wake]:
        if limit <= 0:
            return []
        rows = await self._fetch(
            sql.TAKE_DUE_FOR_PUBLISH,
            now,
            limit,
            now - timedelta(seconds=unpublished_grace_seconds),
            now - timedelta(seconds=stale_published_seconds),
        )
        return [wake_from_row(r) for r in rows]

    async def unmark_published(self, ids: Sequence[str]) -> None:
        if ids:
            await self._execute(sql.UNMARK_PUBLISHED, list(ids))

    async def recover_expired_locks(
        self, now: datetime, *, limit: int, policy: UnknownOutcomePolicy
    ) -> list[RecoveredLock]:
        if limit <= 0:
            return []
        rows = await self._fetch(
            sql.RECOVER_EXPIRED_LOCKS,
            now,
            limit,
            policy is UnknownOutcomePolicy.FAIL,
            dumps(OUTCOME_UNKNOWN.to_dict()),
        )
        return [
            RecoveredLock(
                id=r["id"],
                unknown_attempt=r["unknown"],
                republish=r["republish"],
                app=r["app"],
                lane=Lane(r["lane"]),
            )
            for r in rows
        ]

    async def reopen(self, id: str, now: datetime) -> bool:
        if not storable(id):
            return False
        return await self._fetchrow(sql.REOPEN, id, now) is not None

    async def delete_final(self, before: datetime, *, limit: int) -> int:
        if limit <= 0:
            return 0
        status = await self._execute(sql.DELETE_FINAL, id_floor(before), before, limit)
        return int(status.split()[-1])

    async def bulk_apps(self) -> list[str]:
        # sorted here, not by the database's collation: the same order on every store
        return sorted(r["app"] for r in await self._fetch(sql.BULK_APPS))

    async def counts_by_status(
        self, app: str | None = None, *, open_only: bool = False
    ) -> dict[Status, int]:
        if app is None:
            rows = await self._fetch(sql.COUNTS_OPEN if open_only else sql.COUNTS)
        else:
            query = sql.COUNTS_OPEN_FOR_APP if open_only else sql.COUNTS_FOR_APP
            rows = await self._fetch(query, app)
        return zero_filled_counts((r["status"], r["n"]) for r in rows)

    # -- devices -----------------------------------------------------------------------------------
    async def upsert_device(
        self, app: str, token: str, platform: Platform, user_id: str | None, now: datetime
    ) -> tuple[Device, bool]:
        if not storable(app, token, user_id):
            raise ValueError("a device token or user id with a NUL character cannot be stored")
        row = await self._fetchrow(
            sql.UPSERT_DEVICE, app, token, Platform(platform).value, user_id, now
        )
        return device_from_row(row), bool(row["created"])

    async def delete_device(self, app: str, token: str) -> bool:
        if not storable(app, token):
            return False
        return await self._execute(sql.DELETE_DEVICE, app, token) != "DELETE 0"

    async def get_device(self, app: str, token: str) -> Device | None:
        if not storable(app, token):
            return None
        row = await self._fetchrow(sql.GET_DEVICE, app, token)
        return device_from_row(row) if row is not None else None

    async def list_devices_of_users(
        self, app: str, user_ids: Sequence[str], *, active_only: bool = False
    ) -> dict[str, list[Device]]:
        wanted = [u for u in dict.fromkeys(user_ids) if storable(u)]
        if not wanted or not storable(app):
            return {}
        rows = await self._fetch(sql.LIST_DEVICES, app, wanted, active_only)
        return by_user(device_from_row(r) for r in rows)

    async def deactivate_device(
        self,
        app: str,
        token: str,
        reason: str,
        now: datetime,
        *,
        unless_registered_after: datetime | None = None,
    ) -> bool:
        if not storable(app, token, reason):
            return False
        status = await self._execute(
            sql.DEACTIVATE_DEVICE, app, token, reason, now, unless_registered_after
        )
        return status != "UPDATE 0"

    # -- API keys ----------------------------------------------------------------------------------
    async def add_api_key(self, app: str, key_hash: str, now: datetime) -> None:
        await self._execute(sql.ADD_API_KEY, key_hash, app, now)

    async def app_for_key_hash(self, key_hash: str) -> str | None:
        if not storable(key_hash):
            return None
        row = await self._fetchrow(sql.APP_FOR_KEY_HASH, key_hash)
        return None if row is None else str(row["app"])

    async def list_api_keys(self, app: str | None = None) -> list[ApiKeyInfo]:
        if not storable(app):
            return []
        rows = await self._fetch(sql.LIST_API_KEYS, app)
        return [ApiKeyInfo(r["id"], r["app"], r["created_at"]) for r in rows]

    async def revoke_api_key(self, key_id: str) -> str | None:
        if not is_api_key_id(key_id):
            return None
        row = await self._fetchrow(sql.REVOKE_API_KEY, key_id)
        return None if row is None else str(row["app"])
