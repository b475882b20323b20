"""The write path, reads, list paging, cancel and batches against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import orjson
import pytest

from notifier.metrics import API_PUBLISH_FAILURES
from notifier.models import AttemptOutcome, Notification, Status, utcnow
from notifier.settings import Settings
from notifier.store import InsertResult, NotificationStore, Outcome, open_store
from tests.api.conftest import APNS_TOKEN, FCM_TOKEN, Api, in_chunks
from tests.support import wait_for

APNS = {"platform": "apns", "token": APNS_TOKEN}
FCM = {"platform": "fcm", "token": FCM_TOKEN}
NOTIFICATION_KEYS = {
    "id", "user_id", "target", "title", "body", "data", "priority", "lane", "ttl_seconds",
    "collapse_key", "apns_topic", "status", "scheduled_for", "attempts", "history",
    "last_error", "sent_at", "provider_message_id", "created_at", "updated_at",
}  # fmt: skip


class CountingStore:
    """The real store, counting the calls the API makes to insert_many."""

    def __init__(self, inner: NotificationStore) -> None:
        self._inner = inner
        self.insert_calls = 0

    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        self.insert_calls += 1
        return await self._inner.insert_many(notifications)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_accepted_notification_is_stored_and_queued(api: Api) -> None:
    body = {"to": APNS, "user_id": "u1", "title": "Hi", "body": "text", "data": {"k": "v"},
            "priority": "normal", "ttl_seconds": 3600, "collapse_key": "c1"}  # fmt: skip
    r = await api.post("/v1/notifications", body)
    assert r.status == 202
    accepted = await r.json()
    assert accepted["status"] == "pending"
    assert await api.stored() == 1
    assert await api.queued() == 1
    r = await api.client.get(f"/v1/notifications/{accepted['id']}", headers=api.auth)
    doc = await r.json()
    assert r.status == 200
    assert doc.keys() == NOTIFICATION_KEYS
    assert doc["target"] == APNS
    assert doc["attempts"] == 0 and doc["history"] == []
    assert (doc["priority"], doc["ttl_seconds"], doc["collapse_key"]) == ("normal", 3600, "c1")
    stored = await api.store.get(accepted["id"])
    assert stored is not None
    await wait_for(lambda: _published(api, accepted["id"]), what="published_at recorded")


async def _published(api: Api, nid: str) -> bool:
    stored = await api.store.get(nid)
    return stored is not None and stored.published_at is not None


async def test_history_and_attempts_are_shown(api: Api) -> None:
    r = await api.post("/v1/notifications", {"to": FCM, "data": {"k": "v"}})
    nid = (await r.json())["id"]
    now = utcnow()
    claim = await api.store.claim(nid, "host-1-abc", now, 60)
    assert claim.won
    done = Outcome(Status.SENT, AttemptOutcome.SENT, now, provider_status=200,
                   provider_message_id="m1")  # fmt: skip
    assert await api.store.complete(nid, "host-1-abc", done)
    doc = await (await api.client.get(f"/v1/notifications/{nid}", headers=api.auth)).json()
    assert doc["status"] == "sent" and doc["attempts"] == 1
    assert doc["history"][0]["worker"] == "host-1-abc"
    assert doc["history"][0]["outcome"] == "sent"
    assert doc["history"][0]["provider_status"] == 200
    r = await api.client.delete(f"/v1/notifications/{nid}", headers=api.auth)
    assert r.status == 409
    assert r.content_type == "application/problem+json"


async def test_scheduled_is_stored_not_queued_and_past_schedule_sends_now(api: Api) -> None:
    future = (utcnow() + timedelta(hours=1)).isoformat()
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x", "scheduled_for": future})
    assert r.status == 202 and (await r.json())["status"] == "scheduled"
    assert (await api.stored(), await api.queued()) == (1, 0)
    past = (utcnow() - timedelta(hours=1)).isoformat()
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x", "scheduled_for": past})
    assert r.status == 202 and (await r.json())["status"] == "pending"
    assert (await api.stored(), await api.queued()) == (2, 1)


async def test_cancel_scheduled_then_other_apps_cannot_see_it(api: Api) -> None:
    future = (utcnow() + timedelta(hours=1)).isoformat()
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x", "scheduled_for": future})
    nid = (await r.json())["id"]
    r = await api.client.delete(f"/v1/notifications/{nid}", headers=api.auth)
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    other = {"Authorization": f"Bearer {await api.new_key('another-app')}"}
    for method in ("GET", "DELETE"):
        r = await api.client.request(method, f"/v1/notifications/{nid}", headers=other)
        assert r.status == 404 and r.content_type == "application/problem+json"
    r = await api.client.get("/v1/notifications/does-not-exist", headers=api.auth)
    assert r.status == 404


async def test_list_pages_newest_first(api: Api) -> None:
    ids = []
    for i in range(5):
        r = await api.post("/v1/notifications", {"to": APNS, "title": str(i), "user_id": "u7"})
        ids.append((await r.json())["id"])
    seen: list[str] = []
    after = None
    while True:
        query = "user_id=u7&limit=2" + (f"&after={after}" if after else "")
        page = await (await api.client.get(f"/v1/notifications?{query}", headers=api.auth)).json()
        seen += [item["id"] for item in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == list(reversed(ids))
    r = await api.client.get("/v1/notifications?status=scheduled", headers=api.auth)
    assert (await r.json())["items"] == []


async def test_batch_one_insert_one_publish_errors_in_place(
    api_factory: Callable[..., Any], store: NotificationStore
) -> None:
    counting = CountingStore(store)
    api: Api = await api_factory(app_store=counting)
    publishes: list[int] = []
    original = api.broker.publish

    async def counting_publish(ids: Sequence[str], **route: Any) -> None:
        publishes.append(len(ids))
        await original(ids, **route)

    api.broker.publish = counting_publish  # type: ignore[method-assign,assignment]
    items: list[dict[str, Any]] = [{"to": APNS, "title": str(i)} for i in range(300)]
    items[3] = {"to": APNS, "title": 3, "bogus": 1}
    items[7] = {"to": {"platform": "fcm", "token": ""}, "title": "x"}
    r = await api.post("/v1/notifications/batch", {"notifications": items})
    assert r.status == 200
    results = (await r.json())["results"]
    assert len(results) == 300
    assert results[3]["error"]["status"] == 422
    pointers = {e["pointer"] for e in results[3]["error"]["errors"]}
    assert pointers == {"/notifications/3/title", "/notifications/3/bogus"}
    assert results[7]["error"]["errors"][0]["pointer"] == "/notifications/7/to/token"
    assert all(results[i]["status"] == "pending" for i in range(300) if i not in (3, 7))
    assert counting.insert_calls == 1 and publishes == [298]
    assert (await api.stored(), await api.queued()) == (298, 298)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_batch_of_500_items_past_64_kib_is_accepted(api: Api, chunked: bool) -> None:
    """A batch has its own body limit (2 MiB): 500 ordinary items do not fit in 64 KiB."""
    items = [{"to": APNS, "title": "Hi", "body": f"{i:03d}" + "x" * 230} for i in range(500)]
    raw = orjson.dumps({"notifications": items})
    assert 64 * 1024 < len(raw) < 2 * 1024 * 1024 and len(raw) / 500 > 290
    headers = {**api.auth, "Content-Type": "application/json"}
    data = in_chunks(raw) if chunked else raw
    r = await api.client.post("/v1/notifications/batch", data=data, headers=headers)
    assert r.status == 200, await r.text()
    results = (await r.json())["results"]
    assert [a["status"] for a in results] == ["pending"] * 500
    stored = await api.store.get(results[499]["id"], api.app_name)
    assert stored is not None and stored.body == items[499]["body"]
    assert (await api.stored(), await api.queued()) == (500, 500)


async def test_broker_down_still_accepts(api: Api) -> None:
    before = API_PUBLISH_FAILURES._value.get()
    await api.broker.close()
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x"})
    assert r.status == 202
    nid = (await r.json())["id"]
    stored = await api.store.get(nid)
    assert stored is not None and stored.status is Status.PENDING
    assert stored.published_at is None  # left for the sweeper
    assert API_PUBLISH_FAILURES._value.get() == before + 1
    r = await api.client.get("/ready")
    assert r.status == 503 and r.content_type == "application/problem+json"


async def test_store_down_is_503_and_stores_nothing(
    api_factory: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    own_store = await open_store(make_settings())
    api: Api = await api_factory(app_store=own_store)
    r = await api.post("/v1/notifications", {"to": APNS, "title": "warm the key cache"})
    assert r.status == 202
    await own_store.close()
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x"})
    assert r.status == 503 and r.content_type == "application/problem+json"
    assert (await api.stored(), await api.queued()) == (1, 1)
    r = await api.client.get("/ready")
    assert r.status == 503


async def test_health_ready_and_metrics(api: Api) -> None:
    assert (await api.client.get("/health")).status == 200
    r = await api.client.get("/ready")
    assert r.status == 200 and (await r.json())["status"] == "ready"
    r = await api.post("/v1/notifications", {"to": FCM, "title": "x", "priority": "normal"})
    nid = (await r.json())["id"]
    await api.client.get(f"/v1/notifications/{nid}", headers=api.auth)
    text = await (await api.client.get("/metrics")).text()
    assert (
        'notifier_http_requests_total{method="GET",route="/v1/notifications/{id}",status="200"}'
        in text
    )
    assert nid not in text
    labels = 'lane="transactional",platform="fcm",priority="normal"'
    assert f"notifier_notifications_accepted_total{{{labels}}}" in text
    assert "notifier_http_request_duration_seconds_bucket" in text


async def test_per_key_rate_limit_answers_429_with_retry_after(
    api_factory: Callable[..., Any],
) -> None:
    api: Api = await api_factory(api_rate_per_second=0.5, api_rate_burst=3)
    statuses = []
    for _ in range(5):
        r = await api.client.get("/v1/notifications", headers=api.auth)
        statuses.append(r.status)
    assert statuses == [200, 200, 200, 429, 429]
    assert r.content_type == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    other = await api.new_key()  # another key has its own bucket
    r = await api.client.get("/v1/notifications", headers={"Authorization": f"Bearer {other}"})
    assert r.status == 200


async def test_broker_down_at_start_accepts_and_is_not_ready(
    make_settings: Callable[..., Settings], store: NotificationStore
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from api.app import build_app
    from emulator.testing import free_port
    from notifier.apikeys import generate_key, hash_key

    settings = make_settings(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    key = generate_key()
    await store.add_api_key("no-broker", hash_key(key), utcnow())
    client = TestClient(TestServer(build_app(settings, store, None), host="127.0.0.1"))
    await client.start_server()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        r = await client.post("/v1/notifications", json={"to": APNS, "title": "x"}, headers=headers)
        assert r.status == 202
        stored = await store.get((await r.json())["id"])
        assert stored is not None and stored.published_at is None
        assert (await client.get("/ready")).status == 503
    finally:
        await client.close()


# Every real token shape: APNs tokens vary in length (Apple: do not assume 32 bytes);
# FCM registration tokens are FID:APA91b..., legacy APA91b..., up to ~350 characters.
REAL_TOKENS = [
    APNS,
    FCM,
    {"platform": "apns", "token": "0F" * 80},
    {"platform": "fcm", "token": "cQ1b2C3d4E5f6G7h8I9j0K:APA91bH" + "x_Y-z" * 24},
    {"platform": "fcm", "token": "APA91b" + "AbC-_9" * 25},
    {"platform": "fcm", "token": "eXaMpLeIiD:APA91b" + "q" * 300},
]


async def test_valid_fcm_and_apns_tokens_are_accepted(api: Api) -> None:
    for to in REAL_TOKENS:
        r = await api.post("/v1/notifications", {"to": to, "title": "Hi"})
        assert r.status == 202, await r.text()
    assert (await api.stored(), await api.queued()) == (len(REAL_TOKENS), len(REAL_TOKENS))


async def test_a_whole_number_written_with_a_fraction_is_an_integer(api: Api) -> None:
    """3600.0 is the integer 3600 to JSON Schema (the OpenAPI document), so it is to us."""
    r = await api.post("/v1/notifications", {"to": APNS, "title": "Hi", "ttl_seconds": 3600.0})
    assert r.status == 202, await r.text()
    stored = await api.store.get((await r.json())["id"])
    assert stored is not None and stored.ttl_seconds == 3600
