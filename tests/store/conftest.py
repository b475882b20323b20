"""Fixtures for the store contract suite: one real store per test, on each implementation.

Each runs on PostgreSQL and on MongoDB (a fresh database per test): the SecantusDB stand-in
that scripts/services.sh starts, or the server ``NOTIFIER_TEST_MONGODB_URL`` names (a real
mongod). An in-process fake would prove nothing about the real one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from notifier.models import Notification, Platform, Status, Target, new_id, utcnow
from notifier.store.base import NotificationStore
from tests.conftest import STANDIN_SCALE, drop_mongodb_database, mongodb_url_for

ConnectStore = Callable[[], Awaitable[NotificationStore]]


def is_stand_in(build_info: dict[str, Any]) -> bool:
    """The one place that tells SecantusDB from mongod (it reports a mongod version too)."""
    return "secantusVersion" in build_info


async def _connect(kind: str, url: str) -> NotificationStore:
    if kind == "postgresql":
        from notifier.store.postgres import PostgresStore

        return await PostgresStore.connect(url)
    from notifier.store.mongo import MongoStore  # type: ignore[import-not-found,unused-ignore]

    store: NotificationStore = await MongoStore.connect(url)
    return store


@pytest.fixture(params=["postgresql", "mongodb"])
def store_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(kind, url)`` of an empty database of this test's own."""
    if request.param == "mongodb":
        return "mongodb", mongodb_url_for(f"notifier_test_{secrets.token_hex(6)}")
    return "postgresql", str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
async def connect_store(store_target: tuple[str, str]) -> AsyncIterator[ConnectStore]:
    """Open more stores (separate pools/clients, like separate processes) on the same data."""
    kind, url = store_target
    opened: list[NotificationStore] = []

    async def connect() -> NotificationStore:
        store = await _connect(kind, url)
        opened.append(store)
        return store

    yield connect
    for store in opened:
        await store.close()
    if kind == "mongodb":
        await drop_mongodb_database(url)


@pytest.fixture
async def store(connect_store: ConnectStore) -> NotificationStore:
    """A connected store with its schema set up, closed after the test."""
    store = await connect_store()
    await store.setup()
    return store


@pytest.fixture
def now() -> datetime:
    """The current time at millisecond precision (what both stores keep exactly)."""
    t = utcnow()
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def make_notification(now: datetime, **fields: Any) -> Notification:
    """A valid notification for app ``a``; keyword arguments override any field."""
    values: dict[str, Any] = {
        "id": new_id(),
        "app": "a",
        "target": Target(Platform.FCM, "token-" + secrets.token_hex(8)),
        "created_at": now,
        "updated_at": now,
        "title": "Hi",
        "body": "text",
        "data": {"k": "v"},
        "status": Status.PENDING,
    }
    values.update(fields)
    return Notification(**values)


async def insert(store: NotificationStore, *notifications: Notification) -> list[Notification]:
    """Insert and check every one was created; the stored notifications, in order."""
    results = await store.insert_many(notifications)
    assert all(r.created for r in results)
    return [r.notification for r in results]


@pytest.fixture
async def sized(store_target: tuple[str, str]) -> Callable[[int], int]:
    """tests/conftest.py's ``sized`` for the store of ``store_target``: ``sized(n)`` is n, or
    n x STANDIN_SCALE on the MongoDB stand-in (never on PostgreSQL or a real mongod)."""
    kind, url = store_target
    scale = 1.0
    if kind == "mongodb":
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        try:
            if is_stand_in(await client.admin.command("buildInfo")):
                scale = STANDIN_SCALE
        finally:
            await client.close()
    return lambda n: max(1, round(n * scale))
