"""A client's retry of a request that was stored but never published publishes it.

The API that took the first attempt died between its insert and its publish: the document
is pending with no ``published_at``. The retry (same Idempotency-Key, same body) answers
200 with the first id, and must wake a worker now, not after the sweeper's 30 s grace.
Here the first attempt is played by inserting through the store without publishing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from api.keys import WRITER
from api.schemas import BatchItem, DeviceTarget, NotificationRequest
from api.views import build_notification, fingerprint
from api.writer import REPLAY_PUBLISH_AFTER_SECONDS
from notifier.models import Notification, Target, utcnow
from notifier.sweeper import UNPUBLISHED_GRACE_SECONDS
from tests.api.conftest import APNS_TOKEN, FCM_TOKEN, Api
from tests.support import wait_for

BODY: dict[str, Any] = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"}


async def _stored_unpublished(
    api: Api, body: dict[str, Any], key: str, created_at: datetime, *, batch_item: bool = False
) -> list[Notification]:
    """What the first attempt stored (as the API builds it), never published."""
    model = BatchItem if batch_item else NotificationRequest
    req = model.model_validate(body)
    fp = fingerprint(body)
    if isinstance(req.to, DeviceTarget):
        targets = [(Target(req.to.platform, req.to.token), key)]
    else:  # a user fan-out: one document per active device, keys key#0, key#1, ...
        devices = await api.store.list_devices(api.app_name, req.to.user_id, active_only=True)
        targets = [(Target(d.platform, d.token), f"{key}#{n}") for n, d in enumerate(devices)]
    docs = [
        build_notification(req, api.app_name, target, created_at, idempotency_key=k,
                           request_fingerprint=fp, user_id=getattr(req.to, "user_id", None))
        for target, k in targets
    ]  # fmt: skip
    results = await api.store.insert_many(docs)
    assert all(r.created for r in results)
    assert await api.queued() == 0
    return docs


async def _queued_exactly(api: Api, ids: list[str], timeout: float) -> None:
    async def holds() -> bool:
        return sorted(await api.queued_ids()) == sorted(ids)

    await wait_for(holds, timeout=timeout, what=f"the queue to hold exactly {ids}")


async def test_a_retry_publishes_what_a_dead_api_stored(api: Api) -> None:
    died_at = utcnow() - timedelta(seconds=10)  # the first attempt, a while ago
    [doc] = await _stored_unpublished(api, BODY, "k-dead", died_at)
    r = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "k-dead"})
    assert r.status == 200
    assert (await r.json())["id"] == doc.id
    # published before the answer (the wait only covers reading the queue back)
    await _queued_exactly(api, [doc.id], timeout=2)


async def test_a_quick_retry_publishes_once_the_first_attempt_had_its_chance(api: Api) -> None:
    [doc] = await _stored_unpublished(api, BODY, "k-quick", utcnow())
    r = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "k-quick"})
    assert r.status == 200
    assert (await r.json())["id"] == doc.id
    # far sooner than the sweeper's grace
    assert REPLAY_PUBLISH_AFTER_SECONDS + 3 < UNPUBLISHED_GRACE_SECONDS
    await _queued_exactly(api, [doc.id], timeout=REPLAY_PUBLISH_AFTER_SECONDS + 3)


async def test_a_batch_retry_publishes_what_a_dead_api_stored(api: Api) -> None:
    for token in (FCM_TOKEN, "fcm-token-2"):
        r = await api.client.put(
            f"/v1/devices/{token}", json={"user_id": "u1", "platform": "fcm"}, headers=api.auth
        )
        assert r.status == 201
    died_at = utcnow() - timedelta(seconds=10)
    device_item = {**BODY, "idempotency_key": "b-device"}
    user_item = {"to": {"user_id": "u1"}, "title": "Hi", "idempotency_key": "b-user"}
    docs = await _stored_unpublished(api, device_item, "b-device", died_at, batch_item=True)
    docs += await _stored_unpublished(api, user_item, "b-user", died_at, batch_item=True)
    r = await api.post("/v1/notifications/batch", {"notifications": [device_item, user_item]})
    assert r.status == 200
    results = (await r.json())["results"]
    assert results[0]["id"] == docs[0].id
    assert sorted(results[1]["ids"]) == sorted(d.id for d in docs[1:])
    assert len(docs) == 3
    await _queued_exactly(api, [d.id for d in docs], timeout=2)


async def test_a_retry_of_a_published_request_publishes_nothing_more(api: Api) -> None:
    first = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "k-live"})
    assert first.status == 202
    again = await api.post("/v1/notifications", BODY, **{"Idempotency-Key": "k-live"})
    assert again.status == 200
    writer = api.client.app[WRITER]
    # the retry's re-read (when the first is old enough) has run, and found it published
    await wait_for(
        lambda: writer.rechecks_pending == 0,
        timeout=REPLAY_PUBLISH_AFTER_SECONDS + 3,
        what="the retry's re-read",
    )
    assert await api.queued_ids() == [(await first.json())["id"]]
