"""A notification may name its APNs topic among its app's allowed ones (issue 16): the
app's APNs credential's topics, else the deployment's NOTIFIER_APNS_TOPIC; any other is
422 naming ``apns_topic``, and nothing is stored."""

from __future__ import annotations

from typing import Any

from notifier.models import utcnow
from tests.api.conftest import APNS_TOKEN, Api

TOPICS = ["com.example.shop", "com.example.shop.voip"]


async def _give_apns_topics(api: Api) -> None:
    public = {"provider": "apns", "key_id": "ABC123DEFG", "team_id": "TEAM123456",
              "topics": TOPICS, "fingerprint": "SHA256:00"}  # fmt: skip
    await api.store.put_credential(
        api.app_name, "apns", secrets_key_id="k1", ciphertext=b"x", public=public, now=utcnow()
    )


def _note(topic: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"}
    if topic is not None:
        body["apns_topic"] = topic
    return body


async def test_an_allowed_topic_is_stored_and_shown(api: Api) -> None:
    await _give_apns_topics(api)
    r = await api.client.post("/v1/notifications", json=_note(TOPICS[1]), headers=api.auth)
    assert r.status == 202, await r.text()
    stored = await api.store.get((await r.json())["id"])
    assert stored is not None and stored.apns_topic == TOPICS[1]
    r = await api.client.get(f"/v1/notifications/{stored.id}", headers=api.auth)
    assert (await r.json())["apns_topic"] == TOPICS[1]
    r = await api.client.post("/v1/notifications", json=_note(None), headers=api.auth)
    assert r.status == 202
    stored = await api.store.get((await r.json())["id"])
    assert stored is not None and stored.apns_topic is None  # the credential's first


async def test_a_topic_not_allowed_is_422_and_stores_nothing(api: Api) -> None:
    await _give_apns_topics(api)
    r = await api.client.post(
        "/v1/notifications", json=_note("com.example.other"), headers=api.auth
    )
    assert r.status == 422
    problem = await r.json()
    assert [e["pointer"] for e in problem["errors"]] == ["/apns_topic"]
    assert "com.example.shop" in problem["errors"][0]["message"]
    assert await api.stored() == 0


async def test_a_batch_refuses_only_the_items_with_a_topic_not_allowed(api: Api) -> None:
    await _give_apns_topics(api)
    items = [_note(TOPICS[0]), _note("com.example.other"), _note(None)]
    r = await api.client.post(
        "/v1/notifications/batch", json={"notifications": items}, headers=api.auth
    )
    assert r.status == 200, await r.text()
    results = (await r.json())["results"]
    assert "id" in results[0] and "id" in results[2]
    assert [e["pointer"] for e in results[1]["error"]["errors"]] == ["/notifications/1/apns_topic"]
    assert await api.stored() == 2


async def test_an_app_without_apns_credential_may_name_only_the_environments_topic(
    api: Api,
) -> None:
    r = await api.client.post("/v1/notifications", json=_note("com.example.shop"), headers=api.auth)
    env_topic = api.settings.apns_topic
    if env_topic != "com.example.shop":
        assert r.status == 422
    if env_topic is not None:
        r = await api.client.post("/v1/notifications", json=_note(env_topic), headers=api.auth)
        assert r.status == 202
