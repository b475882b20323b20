"""Idempotency keys (also raced across two replicas) and the device registry with fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store import open_store
from tests.api.conftest import APNS_TOKEN, FCM_TOKEN, Api

APNS = {"platform": "apns", "token": APNS_TOKEN}
BODY = {"to": APNS, "title": "Hi"}


async def test_replay_returns_first_answer_and_other_body_is_409(api: Api) -> None:
    first = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "k1"})
    assert first.status == 202
    again = await api.post("/v1/notifications", dict(reversed(BODY.items())),
                           **{"Idempotency-Key": "k1"})  # fmt: skip
    assert again.status == 200
    assert await again.json() == await first.json()
    other = await api.post(
        "/v1/notifications", {**BODY, "title": "Ho"}, **{"Idempotency-Key": "k1"}
    )
    assert other.status == 409 and other.content_type == "application/problem+json"
    assert (await api.stored(), await api.queued()) == (1, 1)


async def test_two_replicas_racing_on_one_key_create_once(
    api_factory: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    store_a = await open_store(make_settings())
    store_b = await open_store(make_settings())
    a: Api = await api_factory(app_store=store_a)
    b: Api = await api_factory(app_store=store_b, same_as=a)
    assert a.client.port != b.client.port
    try:
        for i in range(15):
            headers = {"Idempotency-Key": f"race-{i}"}
            ra, rb = await asyncio.gather(
                a.post("/v1/notifications", BODY, **headers),
                b.post("/v1/notifications", BODY, **headers),
            )
            assert sorted([ra.status, rb.status]) == [200, 202]
            assert (await ra.json())["id"] == (await rb.json())["id"]
        assert (await a.stored(), await a.queued()) == (15, 15)
    finally:
        await store_a.close()
        await store_b.close()


async def test_devices_register_refresh_list_delete(api: Api) -> None:
    path = f"/v1/devices/{FCM_TOKEN}"
    r = await api.client.put(path, json={"user_id": "u1", "platform": "fcm"}, headers=api.auth)
    assert r.status == 201
    device = await r.json()
    assert device["token"] == FCM_TOKEN and device["active"] is True
    r = await api.client.put(path, json={"user_id": "u1", "platform": "fcm"}, headers=api.auth)
    assert r.status == 200
    r = await api.client.get("/v1/users/u1/devices", headers=api.auth)
    assert [d["token"] for d in (await r.json())["items"]] == [FCM_TOKEN]
    other = {"Authorization": f"Bearer {await api.new_key('another-app')}"}
    r = await api.client.get("/v1/users/u1/devices", headers=other)
    assert (await r.json())["items"] == []
    assert (await api.client.delete(path, headers=other)).status == 404
    assert (await api.client.delete(path, headers=api.auth)).status == 204
    assert (await api.client.delete(path, headers=api.auth)).status == 404


async def test_device_with_bad_token_or_platform_is_422(api: Api) -> None:
    r = await api.client.put("/v1/devices/xyz", json={"platform": "apns"}, headers=api.auth)
    assert r.status == 422
    assert (await r.json())["errors"][0]["pointer"] == "/path/token"
    r = await api.client.put("/v1/devices/xyz", json={"platform": "sms"}, headers=api.auth)
    assert r.status == 422
    assert await api.store.get_device(api.app_name, "xyz") is None


async def test_fan_out_to_active_devices_with_idempotency(api: Api) -> None:
    tokens = ["b" * 64, "c" * 64, "d" * 64]
    for token in tokens:
        r = await api.client.put(
            f"/v1/devices/{token}", json={"user_id": "u9", "platform": "apns"}, headers=api.auth
        )
        assert r.status == 201
    await api.store.deactivate_device(api.app_name, tokens[2], "unregistered", utcnow())
    body = {"to": {"user_id": "u9"}, "title": "Hi"}
    r = await api.post("/v1/notifications", body, **{"Idempotency-Key": "fan"})
    assert r.status == 202
    answer = await r.json()
    assert answer["status"] == "pending" and len(answer["ids"]) == 2
    targets = set()
    for nid in answer["ids"]:
        stored = await api.store.get(nid)
        assert stored is not None and stored.user_id == "u9"
        targets.add(stored.target.token)
    assert targets == set(tokens[:2])
    # A replay answers the same ids even after the user gained a device; nothing new is made.
    await api.client.put(
        f"/v1/devices/{'e' * 64}", json={"user_id": "u9", "platform": "apns"}, headers=api.auth
    )
    r = await api.post("/v1/notifications", body, **{"Idempotency-Key": "fan"})
    assert r.status == 200 and await r.json() == answer
    r = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "fan"})
    assert r.status == 409
    assert (await api.stored(), await api.queued()) == (2, 2)


async def test_batch_items_carry_their_own_idempotency_keys(api: Api) -> None:
    items = [{**BODY, "idempotency_key": "b1"}, {**BODY, "title": "2", "idempotency_key": "b2"}]
    first = await (await api.post("/v1/notifications/batch", {"notifications": items})).json()
    items[1] = {**items[1], "title": "changed"}
    items.append({**BODY, "title": "3"})
    second = await (await api.post("/v1/notifications/batch", {"notifications": items})).json()
    assert second["results"][0] == first["results"][0]
    assert second["results"][1]["error"]["status"] == 409
    assert second["results"][2]["status"] == "pending"
    assert (await api.stored(), await api.queued()) == (3, 3)


async def test_batch_user_items_fan_out_replay_and_fail_each_on_their_own(api: Api) -> None:
    """A batch's user-target items are looked up together; each still gets its own answer:
    its users' devices, its key's stored documents, or its own 422."""
    for token, user in (("1" * 64, "ua"), ("2" * 64, "ua"), ("3" * 64, "ub")):
        r = await api.client.put(
            f"/v1/devices/{token}", json={"user_id": user, "platform": "apns"}, headers=api.auth
        )
        assert r.status == 201

    def to(user: str, key: str | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"to": {"user_id": user}, "title": "Hi"}
        return item if key is None else {**item, "idempotency_key": key}

    items = [to("ua", "ka"), to("ub"), to("nobody"), BODY, to("ub", "kb")]
    first = (await (await api.post("/v1/notifications/batch", {"notifications": items})).json())[
        "results"
    ]
    assert [len(first[i].get("ids", [])) for i in (0, 1, 4)] == [2, 1, 1]
    assert first[2]["error"]["status"] == 422 and "id" in first[3]
    for answer, user in ((first[0], "ua"), (first[1], "ub"), (first[4], "ub")):
        for nid in answer["ids"]:
            stored = await api.store.get(nid)
            assert stored is not None and stored.user_id == user
    second = (await (await api.post("/v1/notifications/batch", {"notifications": items})).json())[
        "results"
    ]
    assert second[0] == first[0] and second[4] == first[4]  # replays: the same ids
    assert second[1]["ids"] != first[1]["ids"]  # no key: a new notification
    assert (await api.stored(), await api.queued()) == (2 + 1 + 1 + 1 + 1 + 1, 7)
