"""Whatever the API's validation accepts, the real store stores (and reads back the same).

A property test: hypothesis writes request bodies near and past every limit (dates at the
ends of the calendar with any offset, text of any script, empty and long strings), each
goes through the API's own parsing and validation, and every accepted one is inserted
into PostgreSQL (and MongoDB when NOTIFIER_TEST_MONGODB_URL is set). A value that passes
validation but that a store refuses would fail the request, and with the API's grouped
writes every request grouped with it (issue 13: ``0001-01-01T00:00:00+01:00``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api.body import parse_json
from api.problems import Problem
from api.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    DeviceRequest,
    DeviceTarget,
    NotificationRequest,
    check_token,
)
from api.views import build_notification, fingerprint
from notifier.models import Notification, Target, utcnow
from notifier.providers.spec import APNS, FCM
from notifier.store.base import NotificationStore

MAX_EXAMPLES = 150  # a few seconds on each store


def _rfc3339(moment: datetime, offset_minutes: int | None, fraction: str) -> str:
    if offset_minutes is None:
        zone = "Z"
    else:
        sign = "-" if offset_minutes < 0 else "+"
        zone = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{fraction}{zone}"


_NOW = utcnow().replace(tzinfo=None)
# Mostly near the accepted window (1970 .. now + 30 days), sometimes at the calendar's ends.
_moments = st.datetimes(
    min_value=datetime(1969, 12, 31), max_value=_NOW + timedelta(days=31)
) | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))
_offsets = st.none() | st.integers(-23 * 60 - 59, 23 * 60 + 59)
_fractions = st.sampled_from(["", ".5", ".123456", ".999999999"])
_times = st.builds(_rfc3339, _moments, _offsets, _fractions) | st.builds(
    lambda: utcnow().isoformat()
)
# Any character but NUL (the API refuses NUL before validation; hypothesis favours it).
_chars = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
_text = st.text(_chars, max_size=40) | st.text(_chars, min_size=200, max_size=300)
# Near the provider rules (notifier/providers/spec.py) and inside them, up to their longest.
_fcm_token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1) | (
    st.from_regex(FCM.token_pattern, fullmatch=True)
)
_apns_token = st.text("0123456789abcdefABCDEF", min_size=64, max_size=64) | (
    st.from_regex(APNS.token_pattern, fullmatch=True)
)
_to = st.fixed_dictionaries({"platform": st.just("fcm"), "token": _fcm_token}) | (
    st.fixed_dictionaries({"platform": st.just("apns"), "token": _apns_token})
)
_optional = {
    "user_id": _text,
    "title": _text,
    "data": st.dictionaries(_text, _text, max_size=4),
    "priority": st.sampled_from(["high", "normal"]),
    "ttl_seconds": st.integers(0, 2_419_200) | st.sampled_from([-1, 2_419_201]),
    "collapse_key": _text | st.from_regex(APNS.collapse_pattern or "", fullmatch=True),
    "scheduled_for": _times,
}
_bodies = st.fixed_dictionaries({"to": _to, "body": _text}, optional=_optional)
_keys = st.none() | st.from_regex(IDEMPOTENCY_KEY_PATTERN, fullmatch=True)


def _accepted(body: dict[str, Any], key: str | None) -> Notification | None:
    """The document the API would store for ``body``, or None when the API refuses it."""
    try:
        parsed = parse_json(orjson.dumps(body))
        req = NotificationRequest.model_validate(parsed)
    except (Problem, ValidationError):
        return None
    assert isinstance(req.to, DeviceTarget)
    fp = fingerprint(parsed) if key is not None else None
    target = Target(req.to.platform, req.to.token)
    app = f"app-{secrets.token_hex(6)}"  # a key of its own: every insert creates
    return build_notification(
        req, app, target, utcnow(), idempotency_key=key, request_fingerprint=fp
    )


def _ms(moment: datetime | None) -> datetime | None:
    """At millisecond precision, what both stores keep."""
    return None if moment is None else moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@given(body=_bodies, key=_keys)
@example(
    body={
        "to": {"platform": "fcm", "token": "fcm-token-1"},
        "title": "x",
        "scheduled_for": "0001-01-01T00:00:00+01:00",
    },
    key=None,
)
@example(
    body={
        "to": {"platform": "fcm", "token": "fcm-token-1"},
        "title": "x",
        "scheduled_for": "0001-01-01T00:00:00Z",
    },
    key="k",
)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_every_accepted_request_is_stored(
    store: NotificationStore, body: dict[str, Any], key: str | None
) -> None:
    doc = _accepted(body, key)
    event("refused by validation" if doc is None else "accepted")
    if doc is None:
        return
    [result] = await store.insert_many([doc])
    assert result.created
    got = await store.get(doc.id)
    assert got is not None
    assert (got.target, got.user_id, got.title, got.body, got.data) == (
        doc.target,
        doc.user_id,
        doc.title,
        doc.body,
        doc.data,
    )
    assert (got.priority, got.ttl_seconds, got.collapse_key, got.status) == (
        doc.priority,
        doc.ttl_seconds,
        doc.collapse_key,
        doc.status,
    )
    assert _ms(got.scheduled_for) == _ms(doc.scheduled_for)
    assert _ms(got.next_attempt_at) == _ms(doc.next_attempt_at)
    assert got.idempotency_key == key


_device_bodies = st.fixed_dictionaries(
    {"platform": st.sampled_from(["fcm", "apns"])}, optional={"user_id": _text | st.none()}
)


@given(body=_device_bodies, token=_fcm_token | _apns_token)
@settings(
    max_examples=MAX_EXAMPLES // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_every_accepted_device_is_stored(
    store: NotificationStore, body: dict[str, Any], token: str
) -> None:
    """``PUT /v1/devices/{token}``: the body and the path token, as the route checks them."""
    try:
        req = DeviceRequest.model_validate(parse_json(orjson.dumps(body)))
        check_token(req.platform, token)
    except (Problem, ValidationError, ValueError):
        event("refused by validation")
        return
    event("accepted")
    app = f"app-{secrets.token_hex(6)}"
    _, created = await store.upsert_device(app, token, req.platform, req.user_id, utcnow())
    assert created
    got = await store.get_device(app, token)
    assert got is not None
    assert (got.token, got.platform, got.user_id, got.active) == (
        token,
        req.platform,
        req.user_id,
        True,
    )
