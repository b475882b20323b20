"""Round trips to MongoDB per operation do not grow with the number of ids (issue 14).

A worker claims a broker message's ids (up to 50) with ``claim_many`` and writes their
outcomes with ``complete_many``; the API stores a batch (up to 500) with ``insert_many``.
PyMongo's command monitoring, registered on the very client the store uses, counts the
commands each call sends: the count for 1, 10 and 50 ids must be the same.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from notifier.models import AttemptOutcome, Lane, Platform, Status
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import Outcome
from notifier.store.mongo import MongoStore
from tests.conftest import MONGODB_URL
from tests.store.conftest import make_notification

LOCK = 30.0
T = TypeVar("T")
SIZES = (1, 10, 50)


class CommandCounter(CommandListener):
    """Names of the commands the client started, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    async def count(self, call: Awaitable[Any]) -> list[str]:
        """The commands ``call`` sent."""
        return (await self.run(call))[0]

    async def run(self, call: Awaitable[T]) -> tuple[list[str], T]:
        """The commands ``call`` sent, and what it returned."""
        start = len(self.names)
        value = await call
        return self.names[start:], value


@pytest.fixture
async def counted() -> AsyncIterator[tuple[MongoStore, CommandCounter]]:
    """A store on a database of its own, and the counter watching its client."""
    name = f"notifier_test_{secrets.token_hex(6)}"
    url = urlunsplit(urlsplit(MONGODB_URL)._replace(path="/" + name))
    counter = CommandCounter()
    store = await MongoStore.connect(url, event_listeners=[counter])
    await store.setup()
    yield store, counter
    await store.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    await client.drop_database(name)
    await client.close()


def sent(at: datetime) -> Outcome:
    return Outcome(Status.SENT, AttemptOutcome.SENT, at, 200, "m")


async def _stored(store: MongoStore, now: datetime, n: int) -> list[str]:
    results = await store.insert_many([make_notification(now) for _ in range(n)])
    return [r.notification.id for r in results]


async def test_claim_many_sends_the_same_commands_for_1_10_and_50_ids(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    store, counter = counted
    per_size = {}
    for size in SIZES:
        ids = await _stored(store, now, size)
        sent_commands = await counter.count(store.claim_many(ids, "w1", now, LOCK))
        per_size[size] = sent_commands
    assert per_size[1] == per_size[10] == per_size[50] == ["update", "find"]


async def test_claim_many_with_misses_sends_the_same_commands(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    """Locked, final, not-due and missing ids are classified by the same read."""
    store, counter = counted
    per_size = {}
    for size in SIZES:
        ids = await _stored(store, now, size)
        held = ids[: size // 2]
        await store.claim_many(held, "w0", now, LOCK)
        asked = [*ids, "01900000-0000-7000-8000-00000000000" + str(size % 10)]
        commands = await counter.count(store.claim_many(asked, "w1", now, LOCK))
        per_size[size] = commands
    assert per_size[1] == per_size[10] == per_size[50] == ["update", "find"]


async def test_complete_many_is_one_bulk_write_whatever_the_number_of_items(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    store, counter = counted
    per_size = {}
    lost_lock = {}
    done = now + timedelta(seconds=1)
    for size in SIZES:
        ids = await _stored(store, now, size)
        await store.claim_many(ids, "w1", now, LOCK)
        per_size[size] = await counter.count(
            store.complete_many("w1", [(id, sent(done)) for id in ids])
        )
        # the same items again: every lock is gone, so one read tells which took (none)
        lost_lock[size] = await counter.count(
            store.complete_many("w1", [(id, sent(done)) for id in ids])
        )
    assert per_size[1] == per_size[10] == per_size[50] == ["update"]
    assert lost_lock[1] == lost_lock[10] == lost_lock[50] == ["update", "find"]


async def test_insert_many_of_a_batch_is_one_insert_and_a_replay_one_read_more(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    store, counter = counted
    first: dict[int, list[str]] = {}
    replay: dict[int, list[str]] = {}
    for size in (1, 50, 500):
        batch = [
            make_notification(now, idempotency_key=f"k{size}-{i}", app=f"app{i % 3}")
            for i in range(size)
        ]
        first[size] = await counter.count(store.insert_many(batch))
        again = [
            make_notification(now, idempotency_key=n.idempotency_key, app=n.app) for n in batch
        ]
        replay[size] = await counter.count(store.insert_many(again))
    assert first[1] == first[50] == first[500] == ["insert"]
    assert replay[1] == replay[50] == replay[500] == ["insert", "find"]


async def test_the_sweepers_takes_are_one_read_and_one_bulk_write_whatever_their_number(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    """Never-published documents past the grace: one find, one bulk of compare-and-sets."""
    store, counter = counted
    per_size = {}
    later = now + timedelta(seconds=60)
    for size in SIZES:
        ids = await _stored(store, now, size)
        per_size[size], taken = await counter.run(
            store.take_due_for_publish(
                later, limit=size, unpublished_grace_seconds=30, stale_published_seconds=3600
            )
        )
        assert sorted(w.id for w in taken) == sorted(ids)
    assert per_size[1] == per_size[10] == per_size[50] == ["find", "update"]


async def test_recovering_expired_locks_is_one_read_and_one_bulk_write_whatever_their_number(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    store, counter = counted
    per_size = {}
    expired = now + timedelta(seconds=LOCK + 1)
    for size in SIZES:
        ids = await _stored(store, now, size)
        await store.claim_many(ids, "w-dead", now, LOCK)
        per_size[size], recovered = await counter.run(
            store.recover_expired_locks(expired, limit=size, policy=UnknownOutcomePolicy.RESEND)
        )
        assert sorted(r.id for r in recovered) == sorted(ids)
    assert per_size[1] == per_size[10] == per_size[50] == ["find", "update"]


async def test_bulk_apps_is_one_distinct_whatever_the_number_of_apps_and_documents(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    """Every worker asks every few seconds: one command, whatever the bulk backlog."""
    store, counter = counted
    per_size = {}
    apps: set[str] = set()
    for size in SIZES:
        batch = [make_notification(now, app=f"app{size}-{i}", lane=Lane.BULK) for i in range(size)]
        twice = make_notification(now, app=batch[0].app, lane=Lane.BULK)  # listed once
        await store.insert_many([*batch, twice])
        apps |= {n.app for n in batch}
        per_size[size], listed = await counter.run(store.bulk_apps())
        assert listed == sorted(apps)
    assert per_size[1] == per_size[10] == per_size[50] == ["distinct"]


async def test_a_batchs_key_and_device_lookups_are_one_find_each_whatever_their_number(
    counted: tuple[MongoStore, CommandCounter], now: datetime
) -> None:
    """The API reads a batch's user-target items' stored keys and devices in one call each."""
    store, counter = counted
    keys: dict[int, list[str]] = {}
    devices: dict[int, list[str]] = {}
    for size in SIZES:
        users = [f"u{size}-{i}" for i in range(size)]
        for user in users:
            await store.upsert_device("a", f"tok-{user}", Platform.FCM, user, now)
        keys[size] = await counter.count(store.list_by_idempotency_keys("a", users))
        devices[size] = await counter.count(
            store.list_devices_of_users("a", users, active_only=True)
        )
    assert keys[1] == keys[10] == keys[50] == ["find"]
    assert devices[1] == devices[10] == devices[50] == ["find"]
