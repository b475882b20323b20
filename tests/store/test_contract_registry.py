"""Store contract: devices, API keys, schema set-up and unavailability (every implementation)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from notifier.apikeys import generate_key, hash_key
from notifier.models import Platform
from notifier.store.base import ApiKeyInfo, NotificationStore, StoreUnavailable
from tests.store.conftest import ConnectStore, insert, make_notification


async def test_upsert_device_creates_then_refreshes(
    store: NotificationStore, now: datetime
) -> None:
    device, created = await store.upsert_device("a", "tok1", Platform.APNS, "u1", now)
    assert created
    assert (device.app, device.token, device.platform, device.user_id) == (
        "a",
        "tok1",
        Platform.APNS,
        "u1",
    )
    assert device.active and device.created_at == now == device.updated_at
    later = now + timedelta(seconds=5)
    device, created = await store.upsert_device("a", "tok1", Platform.APNS, "u2", later)
    assert not created
    assert (device.user_id, device.created_at, device.updated_at) == ("u2", now, later)
    assert await store.get_device("a", "tok1") == device
    assert await store.get_device("b", "tok1") is None


async def test_deactivated_device_is_reactivated_by_registering(
    store: NotificationStore, now: datetime
) -> None:
    await store.upsert_device("a", "tok1", Platform.FCM, "u1", now)
    assert await store.deactivate_device("a", "tok1", "UNREGISTERED", now + timedelta(seconds=1))
    device = await store.get_device("a", "tok1")
    assert device is not None
    assert (device.active, device.deactivated_reason) == (False, "UNREGISTERED")
    device, created = await store.upsert_device(
        "a", "tok1", Platform.FCM, "u1", now + timedelta(seconds=2)
    )
    assert not created
    assert (device.active, device.deactivated_reason) == (True, None)


async def test_deactivate_skips_a_device_registered_after_the_push(
    store: NotificationStore, now: datetime
) -> None:
    pushed_at = now
    await store.upsert_device("a", "tok1", Platform.APNS, "u1", now + timedelta(seconds=1))
    assert not await store.deactivate_device(
        "a", "tok1", "Unregistered", now + timedelta(seconds=2), unless_registered_after=pushed_at
    )
    device = await store.get_device("a", "tok1")
    assert device is not None and device.active
    assert await store.deactivate_device(
        "a",
        "tok1",
        "Unregistered",
        now + timedelta(seconds=3),
        unless_registered_after=now + timedelta(seconds=2),
    )
    assert not await store.deactivate_device("a", "missing", "Unregistered", now)


async def test_list_devices_by_user_and_activity(store: NotificationStore, now: datetime) -> None:
    for token, user in (("t1", "u1"), ("t2", "u1"), ("t3", "u2")):
        await store.upsert_device("a", token, Platform.FCM, user, now)
    await store.upsert_device("b", "t4", Platform.FCM, "u1", now)
    await store.deactivate_device("a", "t2", "UNREGISTERED", now)
    every = await store.list_devices("a", "u1")
    assert sorted(d.token for d in every) == ["t1", "t2"]
    active = await store.list_devices("a", "u1", active_only=True)
    assert [d.token for d in active] == ["t1"]
    assert await store.list_devices("a", "nobody") == []


async def test_list_devices_of_users_answers_each_user_as_the_one_user_lookup(
    store: NotificationStore, now: datetime
) -> None:
    for token, user in (("t1", "u1"), ("t2", "u1"), ("t3", "u2"), ("t5", "u3")):
        await store.upsert_device("a", token, Platform.FCM, user, now)
    await store.upsert_device("b", "t4", Platform.FCM, "u1", now)
    await store.deactivate_device("a", "t5", "UNREGISTERED", now)
    asked = ["u1", "u2", "u3", "nobody", "u1"]
    every = await store.list_devices_of_users("a", asked)
    assert {u: [d.token for d in ds] for u, ds in every.items()} == {
        "u1": ["t1", "t2"],
        "u2": ["t3"],
        "u3": ["t5"],
    }
    assert all(d.app == "a" and d.user_id == u for u, ds in every.items() for d in ds)
    active = await store.list_devices_of_users("a", asked, active_only=True)
    # u3's only device is inactive, and nobody has none: both left out
    assert {u: [d.token for d in ds] for u, ds in active.items()} == {
        "u1": ["t1", "t2"],
        "u2": ["t3"],
    }
    assert await store.list_devices_of_users("c", asked) == {}


async def test_delete_device(store: NotificationStore, now: datetime) -> None:
    await store.upsert_device("a", "tok1", Platform.FCM, "u1", now)
    assert not await store.delete_device("b", "tok1")
    assert await store.delete_device("a", "tok1")
    assert not await store.delete_device("a", "tok1")
    assert await store.get_device("a", "tok1") is None


async def test_api_keys_map_hashes_to_apps(store: NotificationStore, now: datetime) -> None:
    await store.add_api_key("app1", "hash1", now)
    await store.add_api_key("app2", "hash2", now)
    assert await store.app_for_key_hash("hash1") == "app1"
    assert await store.app_for_key_hash("hash2") == "app2"
    assert await store.app_for_key_hash("nope") is None


async def test_api_keys_are_listed_by_id_never_by_hash(
    store: NotificationStore, now: datetime
) -> None:
    first, second, other = (hash_key(generate_key()) for _ in range(3))
    await store.add_api_key("app1", first, now)
    await store.add_api_key("app1", second, now + timedelta(seconds=1))
    await store.add_api_key("app2", other, now + timedelta(seconds=2))
    every = await store.list_api_keys()
    assert every == [
        ApiKeyInfo(first[:16], "app1", now),
        ApiKeyInfo(second[:16], "app1", now + timedelta(seconds=1)),
        ApiKeyInfo(other[:16], "app2", now + timedelta(seconds=2)),
    ]
    assert [k.id for k in await store.list_api_keys("app2")] == [other[:16]]
    assert await store.list_api_keys("nobody") == []


async def test_a_revoked_key_is_gone(store: NotificationStore, now: datetime) -> None:
    kept, revoked = hash_key(generate_key()), hash_key(generate_key())
    await store.add_api_key("app1", kept, now)
    await store.add_api_key("app1", revoked, now)
    assert await store.revoke_api_key(revoked[:16]) == "app1"
    assert await store.app_for_key_hash(revoked) is None
    assert await store.app_for_key_hash(kept) == "app1"
    assert [k.id for k in await store.list_api_keys()] == [kept[:16]]
    assert await store.revoke_api_key(revoked[:16]) is None  # already gone


@pytest.mark.parametrize(
    "key_id", ["", "0", "a" * 15, "A" * 16, ".*", "^", "g" * 16, "a" * 17, "\x00" * 16]
)
async def test_revoke_matches_nothing_but_a_whole_id(
    store: NotificationStore, now: datetime, key_id: str
) -> None:
    """A short, upper-case or pattern-like id revokes nothing (a prefix would match many)."""
    await store.add_api_key("app1", "a" * 64, now)
    assert await store.revoke_api_key(key_id) is None
    assert await store.app_for_key_hash("a" * 64) == "app1"


async def test_setup_twice_and_concurrently_is_harmless(
    connect_store: ConnectStore, store: NotificationStore, now: datetime
) -> None:
    [n] = await insert(store, make_notification(now, idempotency_key="k"))
    await store.setup()
    others = [await connect_store() for _ in range(3)]
    await asyncio.gather(*(s.setup() for s in others), store.setup())
    assert await store.get(n.id) == n
    [replay] = await store.insert_many([make_notification(now, idempotency_key="k")])
    assert not replay.created  # the unique index is still there
    await store.ping()


async def test_closed_store_is_unavailable(connect_store: ConnectStore) -> None:
    other = await connect_store()
    await other.ping()
    await other.close()
    with pytest.raises(StoreUnavailable):
        await other.get("01900000-0000-7000-8000-000000000000")
