"""One app's bad requests never fail another app's good ones (issue 13, item 1).

The API groups concurrent requests into one store insert; a request the store refused used
to fail every request grouped with it (158 of 200 another app's POSTs answered 500). Two
kinds of poison, each beside 200 concurrent good POSTs through a real API process:
- a ``scheduled_for`` that validation now refuses (year 0 once in UTC), answered 422;
- a title the real store refuses (a CHECK constraint on the test database): it passes
  validation, so only the writer's fallback (each request alone) keeps the others whole.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.writer import BrokerLink, Writer
from notifier.apikeys import generate_key, hash_key
from notifier.broker import Broker
from notifier.models import Notification, Platform, Target, new_id, utcnow
from notifier.settings import Settings
from notifier.store import NotificationStore, open_store
from tests.api.conftest import POISON_TITLE
from tests.api.processes import live_api

GOOD = 200
POISON = 20
YEAR_ZERO = "0001-01-01T00:00:00+01:00"


async def _keys(settings: Settings, *apps: str) -> list[str]:
    store = await open_store(settings, setup=False)
    try:
        keys = [generate_key() for _ in apps]
        for app, key in zip(apps, keys, strict=True):
            await store.add_api_key(app, hash_key(key), utcnow())
        return keys
    finally:
        await store.close()


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json(content_type=None)


def _good(n: int) -> dict[str, Any]:
    return {"to": {"platform": "fcm", "token": f"good-{n}"}, "title": "hello"}


def _poison(kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {"to": {"platform": "fcm", "token": "poison"}, "title": "x"}
    if kind == "validation":
        body["scheduled_for"] = YEAR_ZERO
    else:
        body["title"] = POISON_TITLE
    return body


@pytest.mark.parametrize(("kind", "poison_status"), [("validation", 422), ("store", 500)])
async def test_poison_from_one_app_never_fails_another_apps_requests(
    refusing_settings: Settings, tmp_path: Path, kind: str, poison_status: int
) -> None:
    good_key, bad_key = await _keys(refusing_settings, "app-good", "app-bad")
    async with (
        live_api(refusing_settings, tmp_path / "api.log") as base_url,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=GOOD + POISON)) as http,
    ):
        url = f"{base_url}/v1/notifications"
        calls = [("good", _post(http, url, good_key, _good(n))) for n in range(GOOD)]
        calls += [("bad", _post(http, url, bad_key, _poison(kind))) for _ in range(POISON)]
        random.shuffle(calls)  # the poison lands inside the good requests' rounds
        answers = await asyncio.gather(*(call for _, call in calls))
    statuses = {who: Counter[int]() for who in ("good", "bad")}
    for (who, _), (status, _body) in zip(calls, answers, strict=True):
        statuses[who][status] += 1
    assert statuses["good"] == {202: GOOD}
    assert statuses["bad"] == {poison_status: POISON}
    if kind == "validation":
        bodies = [b for (who, _), (_, b) in zip(calls, answers, strict=True) if who == "bad"]
        assert all(e["pointer"] == "/scheduled_for" for b in bodies for e in b["errors"])


@pytest.mark.parametrize(("kind", "item_status"), [("validation", 422), ("store", 500)])
async def test_one_bad_item_does_not_stop_a_batchs_valid_ones(
    refusing_settings: Settings, tmp_path: Path, kind: str, item_status: int
) -> None:
    [key] = await _keys(refusing_settings, "app-batch")
    items = [_good(n) for n in range(499)]
    items.insert(250, _poison(kind))
    async with (
        live_api(refusing_settings, tmp_path / "api.log") as base_url,
        aiohttp.ClientSession() as http,
    ):
        status, body = await _post(
            http, f"{base_url}/v1/notifications/batch", key, {"notifications": items}
        )
        assert status == 200, body
        results = body["results"]
        assert [r["error"]["status"] for r in results if "error" in r] == [item_status]
        assert "error" in results[250]
        ids = [r["id"] for r in results if "id" in r]
        assert len(set(ids)) == 499
        async with http.get(
            f"{base_url}/v1/notifications/{ids[-1]}", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200  # stored, not only answered


def _doc(title: str = "hi", scheduled_for: datetime | None = None) -> Notification:
    now = utcnow()
    return Notification(
        id=new_id(),
        app="app-writer",
        target=Target(Platform.FCM, f"tok-{secrets.token_hex(6)}"),
        created_at=now,
        updated_at=now,
        title=title,
        scheduled_for=scheduled_for,
    )


async def test_the_writer_fails_only_the_request_the_store_refuses(
    make_settings: Any, store: NotificationStore
) -> None:
    """Below the API: a document no store can encode (validation would refuse it), grouped
    with good requests in one round, fails alone."""
    settings = make_settings()
    link = BrokerLink(settings, await Broker.connect(settings))
    writer = Writer(store, link)
    try:
        unencodable = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
        good = [[_doc()] for _ in range(30)] + [[_doc(), _doc()]]
        requests = [*good[:15], [_doc(scheduled_for=unencodable)], *good[15:]]
        outcomes = await asyncio.gather(
            *(writer.write(r) for r in requests), return_exceptions=True
        )
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        assert failed == [15]
        for request, outcome in zip(requests, outcomes, strict=True):
            if request is requests[15]:
                continue
            assert not isinstance(outcome, BaseException)
            assert [r.notification.id for r in outcome] == [d.id for d in request]
            assert all(r.created for r in outcome)
            for d in request:
                assert await store.get(d.id) is not None
    finally:
        await writer.close()
        await link.close()
