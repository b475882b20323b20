"""Bad input gets a clear 4xx problem document and changes nothing (design 3, invariant 5)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notifier.models import utcnow
from tests.api.conftest import APNS_TOKEN, FCM_TOKEN, Api, in_chunks, padded_json


@pytest.fixture
def api(rejecting_api: Api) -> Api:
    """Nothing in this module may publish, so its tests share one API (each its own app)."""
    return rejecting_api


APNS = {"platform": "apns", "token": APNS_TOKEN}
FCM = {"platform": "fcm", "token": FCM_TOKEN}


def _n(**fields: Any) -> dict[str, Any]:
    return {"to": APNS, "title": "Hi", **fields}


def _in_days(days: float) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


# (case, request body, expected status, pointers that must be listed in `errors`)
INVALID_BODIES: list[tuple[str, Any, int, list[str]]] = [
    ("unknown field", _n(colour="red"), 422, ["/colour"]),
    ("unknown field in to", _n(to={**APNS, "x": 1}), 422, ["/to/x"]),
    ("title not a string", _n(title=3), 422, ["/title"]),
    ("bad platform", _n(to={"platform": "sms", "token": "x"}), 422, ["/to/platform"]),
    ("apns token 63 hex", _n(to={"platform": "apns", "token": "a" * 63}), 422, ["/to/token"]),
    ("apns token not hex", _n(to={"platform": "apns", "token": "g" * 64}), 422, ["/to/token"]),
    ("fcm token empty", _n(to={"platform": "fcm", "token": ""}), 422, ["/to/token"]),
    ("fcm token whitespace", _n(to={"platform": "fcm", "token": "a b"}), 422, ["/to/token"]),
    ("fcm token too long", _n(to={"platform": "fcm", "token": "a" * 1025}), 422, ["/to/token"]),
    ("fcm token not ascii", _n(to={"platform": "fcm", "token": "tök" * 3}), 422, ["/to/token"]),
    # FCM answers INVALID_ARGUMENT to these (issue 13, item 6): refused before storing
    ("fcm token 1e100", _n(to={"platform": "fcm", "token": "1e100"}), 422, ["/to/token"]),
    ("fcm token else", _n(to={"platform": "fcm", "token": "else"}), 422, ["/to/token"]),
    ("to missing", {"title": "Hi"}, 422, ["/to"]),
    ("to with token and user", _n(to={**APNS, "user_id": "u"}), 422, ["/to/user_id"]),
    ("data value not a string", _n(data={"k": 1}), 422, ["/data/k"]),
    ("data reserved from", _n(data={"from": "x"}), 422, ["/data"]),
    ("data reserved google", _n(data={"google.x": "x"}), 422, ["/data"]),
    ("data reserved id", _n(data={"notification_id": "x"}), 422, ["/data"]),
    ("data reserved From", _n(data={"From": "x"}), 422, ["/data"]),
    ("data reserved aps", _n(data={"aps": "x"}), 422, ["/data"]),
    ("data nested", _n(data={"k": {"a": "b"}}), 422, ["/data/k"]),
    ("bad priority", _n(priority="urgent"), 422, ["/priority"]),
    ("ttl negative", _n(ttl_seconds=-1), 422, ["/ttl_seconds"]),
    ("ttl past 28 days", _n(ttl_seconds=2_419_201), 422, ["/ttl_seconds"]),
    ("ttl as string", _n(ttl_seconds="3600"), 422, ["/ttl_seconds"]),
    ("collapse key 66 bytes", _n(collapse_key="é" * 33), 422, ["/collapse_key"]),
    # apns-collapse-id is an HTTP/2 header: printable ASCII, no edge whitespace
    ("collapse key not ascii", _n(collapse_key="ü"), 422, ["/collapse_key"]),
    ("collapse key edge space", _n(collapse_key="a "), 422, ["/collapse_key"]),
    ("scheduled without offset", _n(scheduled_for="2026-11-22T18:00:00"), 422, ["/scheduled_for"]),
    ("scheduled not a date", _n(scheduled_for="tomorrow"), 422, ["/scheduled_for"]),
    ("scheduled as number", _n(scheduled_for=1_800_000_000), 422, ["/scheduled_for"]),
    ("scheduled 31 days ahead", _n(scheduled_for=_in_days(31)), 422, ["/scheduled_for"]),
    ("no content", {"to": APNS}, 422, ["/"]),
    ("payload over 4 KiB", _n(body="x" * 3000, data={"k": "y" * 1100}), 422, ["/"]),
    # 4,088 bytes for APNs, 4,102 for FCM (which counts our notification_id too)
    ("fcm payload over 4 KiB", {"to": APNS, "data": {"k": "y" * 4050}}, 422, ["/"]),
    ("NUL in a string", _n(title="a\x00b"), 422, ["/title"]),
    ("body is a list", [1, 2], 422, ["/"]),
    (
        "every invalid field listed",
        {"to": {"platform": "apns", "token": "z"}, "title": 1, "priority": "x", "extra": True},
        422,
        ["/to/token", "/title", "/priority", "/extra"],
    ),
]


def assert_problem(status: int, content_type: str, body: dict[str, Any], expected: int) -> None:
    assert status == expected, body
    assert content_type == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == expected


async def assert_nothing_changed(api: Api) -> None:
    assert await api.stored() == 0
    assert await api.queued() == 0


@pytest.mark.parametrize(
    ("body", "status", "pointers"),
    [pytest.param(b, s, p, id=case) for case, b, s, p in INVALID_BODIES],
)
async def test_invalid_notification_is_rejected_and_changes_nothing(
    api: Api, body: Any, status: int, pointers: list[str]
) -> None:
    r = await api.post("/v1/notifications", body)
    problem = await r.json(content_type=None)
    assert_problem(r.status, r.content_type, problem, status)
    listed = {e["pointer"] for e in problem["errors"]}
    assert set(pointers) <= listed, problem["errors"]
    assert all(e["message"] for e in problem["errors"])
    await assert_nothing_changed(api)


RAW_REJECTIONS: list[tuple[str, bytes, str, int]] = [
    ("malformed JSON", b'{"to": ', "application/json", 400),
    ("not JSON media type", b'{"to": {}}', "text/plain", 415),
]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [pytest.param(r, c, s, id=case) for case, r, c, s in RAW_REJECTIONS],
)
@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/notifications/batch"])
async def test_unreadable_body_is_rejected(
    api: Api, path: str, raw: bytes, content_type: str, status: int
) -> None:
    r = await api.client.post(path, data=raw, headers={**api.auth, "Content-Type": content_type})
    assert_problem(r.status, r.content_type, await r.json(content_type=None), status)
    await assert_nothing_changed(api)


# (case, method, route, a body the route would accept but one byte past its limit, the limit)
OVERSIZE_BODIES = [
    ("single", "POST", "/v1/notifications", padded_json(_n(), 64 * 1024 + 1), "64 KiB"),
    (
        "batch",
        "POST",
        "/v1/notifications/batch",
        padded_json({"notifications": [_n()] * 10}, 2 * 1024 * 1024 + 1),
        "2 MiB",
    ),
    (
        "device",
        "PUT",
        f"/v1/devices/{APNS_TOKEN}",
        padded_json({"platform": "apns", "user_id": "u1"}, 64 * 1024 + 1),
        "64 KiB",
    ),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "raw", "limit"),
    [pytest.param(m, p, r, lim, id=case) for case, m, p, r, lim in OVERSIZE_BODIES],
)
async def test_body_past_the_route_limit_is_413_and_changes_nothing(
    api: Api, method: str, path: str, raw: bytes, limit: str, chunked: bool
) -> None:
    headers = {**api.auth, "Content-Type": "application/json"}
    data = in_chunks(raw) if chunked else raw
    r = await api.client.request(method, path, data=data, headers=headers)
    problem = await r.json(content_type=None)
    assert_problem(r.status, r.content_type, problem, 413)
    assert problem["detail"] == f"the request body is larger than {limit}"
    await assert_nothing_changed(api)
    assert await api.store.list_devices(api.app_name, "u1") == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not bearer"],
)
async def test_missing_or_unknown_key_is_401(api: Api, headers: dict[str, str]) -> None:
    r = await api.client.post("/v1/notifications", json=_n(), headers=headers)
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 401)
    await assert_nothing_changed(api)


@pytest.mark.parametrize(
    "body",
    [{"notifications": []}, {"notifications": [_n()] * 501}, {"items": [_n()]}, {}],
    ids=["empty", "501 items", "wrong envelope", "no items"],
)
async def test_bad_batch_envelope_is_422(api: Api, body: Any) -> None:
    r = await api.post("/v1/notifications/batch", body)
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 422)
    await assert_nothing_changed(api)


@pytest.mark.parametrize(
    "items", [[[None, None]], [_n(), 3], [_n(), None, "x"]], ids=["list", "number", "null"]
)
async def test_batch_item_that_is_not_an_object_is_422_naming_it(api: Api, items: Any) -> None:
    r = await api.post("/v1/notifications/batch", {"notifications": items})
    problem = await r.json(content_type=None)
    assert_problem(r.status, r.content_type, problem, 422)
    bad = [f"/notifications/{i}" for i, item in enumerate(items) if not isinstance(item, dict)]
    assert [e["pointer"] for e in problem["errors"]] == bad
    await assert_nothing_changed(api)


async def test_bad_idempotency_key_is_422(api: Api) -> None:
    r = await api.post("/v1/notifications", _n(), **{"Idempotency-Key": "a#1"})
    problem = await r.json(content_type=None)
    assert_problem(r.status, r.content_type, problem, 422)
    assert problem["errors"][0]["pointer"] == "/header/Idempotency-Key"
    await assert_nothing_changed(api)


async def test_fan_out_to_user_without_device_is_422(api: Api) -> None:
    r = await api.post("/v1/notifications", {"to": {"user_id": "nobody"}, "title": "x"})
    problem = await r.json(content_type=None)
    assert_problem(r.status, r.content_type, problem, 422)
    assert problem["errors"][0]["pointer"] == "/to/user_id"
    await assert_nothing_changed(api)


@pytest.mark.parametrize("query", ["limit=101", "limit=0", "limit=x", "status=bogus"])
async def test_bad_list_query_is_422(api: Api, query: str) -> None:
    r = await api.client.get(f"/v1/notifications?{query}", headers=api.auth)
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 422)


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/v1/notifications", "GET, OPTIONS, POST"),
        ("/v1/notifications/batch", "OPTIONS, POST"),
        ("/v1/notifications/some-id", "DELETE, GET, OPTIONS"),
        (f"/v1/devices/{APNS_TOKEN}", "DELETE, OPTIONS, PUT"),
        ("/v1/users/u1/devices", "GET, OPTIONS"),
        ("/health", "GET, OPTIONS"),
    ],
)
async def test_options_answers_204_with_allow_and_needs_no_key(
    api: Api, path: str, allow: str
) -> None:
    r = await api.client.options(path)
    assert (r.status, r.headers.get("Allow"), await r.read()) == (204, allow, b"")


async def test_options_on_an_unknown_path_is_a_404_problem(api: Api) -> None:
    r = await api.client.options("/v1/nothing-here")
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 404)


async def test_unknown_route_and_method_are_problems(api: Api) -> None:
    r = await api.client.get("/v1/nothing-here", headers=api.auth)
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 404)
    r = await api.client.patch("/v1/notifications", headers=api.auth)
    assert_problem(r.status, r.content_type, await r.json(content_type=None), 405)
    assert "Allow" in r.headers
