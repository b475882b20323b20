"""Lanes at the API (docs/design.md section 3): a single request is transactional and a batch
item bulk unless the request says otherwise; each notification is published to its lane's
queue (the bulk lane: its app's queue), and every answer shows the lane."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from api.schemas import NotificationRequest
from api.views import build_notification, fingerprint
from notifier.broker import delete_queues
from notifier.models import Lane, Target, utcnow
from tests.api.conftest import APNS_TOKEN, FCM_TOKEN, Api

APNS = {"platform": "apns", "token": APNS_TOKEN}
FCM = {"platform": "fcm", "token": FCM_TOKEN}


async def _batch(api: Api, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = await api.post("/v1/notifications/batch", {"notifications": items})
    assert r.status == 200, await r.text()
    results: list[dict[str, Any]] = (await r.json())["results"]
    return results


async def test_a_single_post_is_transactional_and_a_batch_item_bulk_by_default(api: Api) -> None:
    r = await api.post("/v1/notifications", {"to": APNS, "title": "login code"})
    assert r.status == 202
    single = await r.json()
    assert single["lane"] == "transactional"
    results = await _batch(api, [{"to": FCM, "title": f"sale {i}"} for i in range(3)])
    assert [a["lane"] for a in results] == ["bulk"] * 3
    assert await api.queued_ids(Lane.TRANSACTIONAL) == [single["id"]]
    assert sorted(await api.queued_ids(Lane.BULK)) == sorted(a["id"] for a in results)


async def test_the_lane_is_overridden_both_ways(api: Api) -> None:
    r = await api.post("/v1/notifications", {"to": APNS, "title": "digest", "lane": "bulk"})
    assert r.status == 202
    single = await r.json()
    assert single["lane"] == "bulk"
    items = [
        {"to": FCM, "title": "your code", "lane": "transactional"},
        {"to": FCM, "title": "sale", "lane": "bulk"},
        {"to": FCM, "title": "sale"},
    ]
    results = await _batch(api, items)
    assert [a["lane"] for a in results] == ["transactional", "bulk", "bulk"]
    assert await api.queued_ids(Lane.TRANSACTIONAL) == [results[0]["id"]]
    bulk = {single["id"], results[1]["id"], results[2]["id"]}
    assert sorted(await api.queued_ids(Lane.BULK)) == sorted(bulk)


async def test_a_user_fan_out_gives_every_device_the_requests_lane(api: Api) -> None:
    for token in (FCM_TOKEN, "fcm-token-2"):
        r = await api.client.put(
            f"/v1/devices/{token}", json={"user_id": "u1", "platform": "fcm"}, headers=api.auth
        )
        assert r.status == 201
    r = await api.post("/v1/notifications", {"to": {"user_id": "u1"}, "title": "x", "lane": "bulk"})
    assert r.status == 202
    answer = await r.json()
    assert answer["lane"] == "bulk" and len(answer["ids"]) == 2
    [item] = await _batch(api, [{"to": {"user_id": "u1"}, "title": "y", "lane": "transactional"}])
    assert item["lane"] == "transactional" and len(item["ids"]) == 2
    assert sorted(await api.queued_ids(Lane.BULK)) == sorted(answer["ids"])
    assert sorted(await api.queued_ids(Lane.TRANSACTIONAL)) == sorted(item["ids"])


async def test_each_app_has_its_own_bulk_queue(api: Api) -> None:
    other = Api(api.client, api.store, api.broker, api.settings, "app-other-lanes", "")
    other.key = await other.new_key()
    mine = await _batch(api, [{"to": FCM, "title": "a"}, {"to": FCM, "title": "b"}])
    theirs = await _batch(other, [{"to": FCM, "title": "c"}])
    try:
        assert sorted(await api.queued_ids(Lane.BULK)) == sorted(a["id"] for a in mine)
        assert await other.queued_ids(Lane.BULK) == [theirs[0]["id"]]
        assert await api.queued(Lane.TRANSACTIONAL) == 0
    finally:
        await delete_queues(api.settings, [other.app_name])


@pytest.mark.parametrize("lane", ["urgent", "", None, 1, ["bulk"], "BULK"])
async def test_an_unknown_lane_is_422_naming_the_field_and_changes_nothing(
    api: Api, lane: Any
) -> None:
    r = await api.post("/v1/notifications", {"to": APNS, "title": "x", "lane": lane})
    assert r.status == 422 and r.content_type == "application/problem+json"
    problem = await r.json(content_type=None)
    assert [e["pointer"] for e in problem["errors"]] == ["/lane"]
    items = [{"to": FCM, "title": "x", "lane": lane}]
    r = await api.post("/v1/notifications/batch", {"notifications": items})
    assert r.status == 200
    [refused] = (await r.json())["results"]
    assert refused["error"]["status"] == 422
    assert [e["pointer"] for e in refused["error"]["errors"]] == ["/notifications/0/lane"]
    assert await api.stored() == 0
    assert await api.queued() == 0


async def test_the_lane_is_in_the_get_list_and_cancel_answers(api: Api) -> None:
    """The stored lane is read back (needs the stores to persist ``lane``)."""
    later = (utcnow() + timedelta(hours=1)).isoformat()
    posted = {}
    for lane in ("transactional", "bulk"):
        body = {"to": APNS, "title": lane, "lane": lane, "scheduled_for": later}
        r = await api.post("/v1/notifications", body)
        assert r.status == 202
        posted[lane] = (await r.json())["id"]
    for lane, nid in posted.items():
        doc = await (await api.client.get(f"/v1/notifications/{nid}", headers=api.auth)).json()
        assert doc["lane"] == lane
    page = await (await api.client.get("/v1/notifications", headers=api.auth)).json()
    assert {item["id"]: item["lane"] for item in page["items"]} == {
        nid: lane for lane, nid in posted.items()
    }
    r = await api.client.delete(f"/v1/notifications/{posted['bulk']}", headers=api.auth)
    assert r.status == 200 and (await r.json())["lane"] == "bulk"


async def test_a_replay_answers_and_publishes_in_the_stored_lane(api: Api) -> None:
    """The first attempt stored a bulk notification and died before publishing; the retry
    answers with its lane and publishes it to the bulk queue (needs the stores to persist
    ``lane``)."""
    body = {"to": APNS, "title": "digest", "lane": "bulk"}
    req = NotificationRequest.model_validate(body)
    died_at = utcnow() - timedelta(seconds=10)
    doc = build_notification(
        req, api.app_name, Target(req.to.platform, APNS_TOKEN), died_at,  # type: ignore[union-attr]
        idempotency_key="k-bulk", request_fingerprint=fingerprint(body),
    )  # fmt: skip
    assert all(r.created for r in await api.store.insert_many([doc]))
    r = await api.post("/v1/notifications", body, **{"Idempotency-Key": "k-bulk"})
    assert r.status == 200
    assert await r.json() == {"id": doc.id, "status": "pending", "lane": "bulk"}
    assert await api.queued_ids(Lane.BULK) == [doc.id]
    assert await api.queued(Lane.TRANSACTIONAL) == 0
