"""Pure mapping: notification -> FCM message / APNs request, provider answer -> PushResult.

The answers are PROTOCOLS.md's test vectors (sections 1.5, 2.5 and 6).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from notifier.models import Platform, Priority, Target
from notifier.providers.apns import (
    build_apns_request,
    check_apns_request,
    map_apns_response,
)
from notifier.providers.base import PushOutcome
from notifier.providers.fcm import build_fcm_message, map_fcm_response
from notifier.providers.http2 import parse_retry_after
from tests.providers.support import CREATED, make

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


# -- FCM message -------------------------------------------------------------------------------


def test_fcm_message_carries_content_priority_ttl_collapse_and_tracing_id() -> None:
    n = make(Platform.FCM, ttl_seconds=3600, collapse_key="c1")
    assert build_fcm_message(n) == {
        "token": n.target.token,
        "notification": {"title": "Hi", "body": "text"},
        "data": {"k": "v", "notification_id": n.id},
        "android": {
            "priority": "HIGH",
            "ttl": "3600s",
            "collapse_key": "c1",
            "notification": {"tag": n.id},
        },
    }


def test_fcm_data_only_message_has_no_notification_block_and_normal_priority_maps() -> None:
    n = make(Platform.FCM, title=None, body=None, priority=Priority.NORMAL)
    message = build_fcm_message(n)
    assert "notification" not in message
    assert message["android"] == {"priority": "NORMAL"}
    assert message["data"] == {"k": "v", "notification_id": n.id}


def test_fcm_message_with_title_only_omits_the_missing_body() -> None:
    assert build_fcm_message(make(Platform.FCM, body=None))["notification"] == {"title": "Hi"}


# -- FCM answers -------------------------------------------------------------------------------


def fcm_error(status: int, rpc: str, *details: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"error": {"code": status, "status": rpc, "message": "m", "details": list(details)}}
    )


def fcm_code(code: str) -> dict[str, Any]:
    return {"@type": FCM_ERROR, "errorCode": code}


def test_fcm_200_is_sent_with_the_message_name() -> None:
    result = map_fcm_response(200, b'{"name":"projects/p/messages/0:1%abc"}')
    assert result.outcome is PushOutcome.SENT
    assert result.message_id == "projects/p/messages/0:1%abc"


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (404, fcm_error(404, "NOT_FOUND", fcm_code("UNREGISTERED")), "token_dead", "UNREGISTERED"),
        (
            400,
            fcm_error(400, "INVALID_ARGUMENT", fcm_code("INVALID_ARGUMENT")),
            "token_dead",
            "INVALID_ARGUMENT",
        ),
        (
            400,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.data[0].value"}]},
            ),
            "permanent",
            "INVALID_ARGUMENT",
        ),
        (400, fcm_error(400, "INVALID_ARGUMENT"), "permanent", "INVALID_ARGUMENT"),
        (
            403,
            fcm_error(403, "PERMISSION_DENIED", fcm_code("SENDER_ID_MISMATCH")),
            "token_dead",
            "SENDER_ID_MISMATCH",
        ),
        (403, fcm_error(403, "PERMISSION_DENIED"), "retry", "config_error"),
        (
            401,
            fcm_error(401, "UNAUTHENTICATED", fcm_code("THIRD_PARTY_AUTH_ERROR")),
            "retry",
            "config_error",
        ),
        (401, fcm_error(401, "UNAUTHENTICATED"), "retry", "config_error"),
        (500, fcm_error(500, "INTERNAL", fcm_code("INTERNAL")), "retry", "INTERNAL"),
        (503, fcm_error(503, "UNAVAILABLE", fcm_code("UNAVAILABLE")), "retry", "UNAVAILABLE"),
        (502, b"<html>bad gateway</html>", "retry", "HTTP_502"),
        (418, b"", "permanent", "HTTP_418"),
    ],
)
def test_fcm_error_answers_map_to_outcomes(
    status: int, body: bytes, outcome: str, code: str
) -> None:
    result = map_fcm_response(status, body)
    assert (result.outcome.value, result.code, result.provider_status) == (outcome, code, status)
    assert result.message


def test_fcm_quota_exceeded_honours_retry_after_and_defaults_to_a_minute() -> None:
    body = fcm_error(429, "RESOURCE_EXHAUSTED", fcm_code("QUOTA_EXCEEDED"))
    assert map_fcm_response(429, body, 30.0).retry_after_seconds == 30.0
    without = map_fcm_response(429, body)
    assert (without.outcome, without.code) == (PushOutcome.RETRY, "QUOTA_EXCEEDED")
    assert without.retry_after_seconds == 60.0


def test_fcm_unavailable_passes_retry_after_only_when_given() -> None:
    body = fcm_error(503, "UNAVAILABLE")
    assert map_fcm_response(503, body, 5.0).retry_after_seconds == 5.0
    assert map_fcm_response(503, body).retry_after_seconds is None


@pytest.mark.parametrize(
    "body", [b"", b"null", b"[1]", b'{"error": 3}', b'{"error": {"details": 7}}']
)
def test_fcm_garbage_error_bodies_fall_back_to_the_http_status(body: bytes) -> None:
    assert map_fcm_response(503, body).outcome is PushOutcome.RETRY
    assert map_fcm_response(400, body).outcome is PushOutcome.PERMANENT


# -- APNs request ------------------------------------------------------------------------------


def test_apns_alert_request_headers_and_payload() -> None:
    n = make(ttl_seconds=3600, collapse_key="c1")
    request = build_apns_request(n, "com.example.app")
    assert request.path == f"/3/device/{n.target.token}"
    assert request.headers == {
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-id": n.id,
        "apns-collapse-id": "c1",
        "apns-expiration": str(int(CREATED.timestamp()) + 3600),
    }
    assert orjson.loads(request.body) == {
        "aps": {"alert": {"title": "Hi", "body": "text"}},
        "k": "v",
    }
    assert check_apns_request(request) is None


def test_apns_data_only_is_a_background_push_with_priority_5_even_when_high() -> None:
    n = make(title=None, body=None, priority=Priority.HIGH)
    request = build_apns_request(n, "t")
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert orjson.loads(request.body) == {"aps": {"content-available": 1}, "k": "v"}


def test_apns_normal_priority_without_ttl_or_collapse_key() -> None:
    n = make(priority=Priority.NORMAL)
    headers = build_apns_request(n, "t").headers
    assert headers["apns-priority"] == "5"
    assert "apns-expiration" not in headers
    assert headers["apns-collapse-id"] == n.id  # duplicates replace each other on the device


def test_apns_data_cannot_overwrite_aps() -> None:
    body = orjson.loads(build_apns_request(make(data={"aps": "x", "a": "b"}), "t").body)
    assert body == {"aps": {"alert": {"title": "Hi", "body": "text"}}, "a": "b"}


def test_apns_token_is_quoted_into_the_path() -> None:
    n = make(target=Target(Platform.APNS, "ab/../x y"))
    assert build_apns_request(n, "t").path == "/3/device/ab%2F..%2Fx%20y"


def test_apns_oversized_payload_is_refused_before_any_request() -> None:
    request = build_apns_request(make(body="x" * 4100), "t")
    result = check_apns_request(request)
    assert result is not None
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "PayloadTooLarge",
        None,
    )


def test_apns_payload_of_exactly_4096_bytes_is_allowed() -> None:
    base = len(build_apns_request(make(body=""), "t").body)
    request = build_apns_request(make(body="x" * (4096 - base)), "t")
    assert len(request.body) == 4096
    assert check_apns_request(request) is None


@pytest.mark.parametrize("collapse_key", ["c" * 65, "a\nb", "é"])
def test_apns_collapse_key_too_long_or_not_a_header_value_is_permanent(collapse_key: str) -> None:
    result = check_apns_request(build_apns_request(make(collapse_key=collapse_key), "t"))
    assert result is not None
    assert (result.outcome, result.code) == (PushOutcome.PERMANENT, "BadCollapseId")


# -- APNs answers ------------------------------------------------------------------------------


def test_apns_200_is_sent_with_the_echoed_apns_id() -> None:
    result = map_apns_response(200, b"", apns_id="0193a0c8-0000-7000-8000-000000000000")
    assert result.sent and result.message_id == "0193a0c8-0000-7000-8000-000000000000"


def test_apns_410_unregistered_carries_its_timestamp() -> None:
    result = map_apns_response(410, b'{"reason":"Unregistered","timestamp":1767225600000}')
    assert (result.outcome, result.code) == (PushOutcome.TOKEN_DEAD, "Unregistered")
    assert result.token_invalid_since == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "reason", "outcome", "code"),
    [
        (400, "BadDeviceToken", "token_dead", "BadDeviceToken"),
        (400, "DeviceTokenNotForTopic", "token_dead", "DeviceTokenNotForTopic"),
        (410, "ExpiredToken", "token_dead", "ExpiredToken"),
        (429, "TooManyRequests", "retry", "TooManyRequests"),
        (503, "ServiceUnavailable", "retry", "ServiceUnavailable"),
        (500, "InternalServerError", "retry", "InternalServerError"),
        (503, "Shutdown", "retry", "Shutdown"),
        (403, "ExpiredProviderToken", "retry", "config_error"),
        (403, "InvalidProviderToken", "retry", "config_error"),
        (429, "TooManyProviderTokenUpdates", "retry", "config_error"),
        (403, "BadCertificate", "retry", "config_error"),
        (413, "PayloadTooLarge", "permanent", "PayloadTooLarge"),
        (400, "BadTopic", "permanent", "BadTopic"),
        (400, "TopicDisallowed", "permanent", "TopicDisallowed"),
        (400, "BadMessageId", "permanent", "BadMessageId"),
        (400, "BadPriority", "permanent", "BadPriority"),
        (400, "BadExpirationDate", "permanent", "BadExpirationDate"),
        (400, "MissingTopic", "permanent", "MissingTopic"),
        (400, "BadCollapseId", "permanent", "BadCollapseId"),
        (403, "Forbidden", "permanent", "Forbidden"),
        (400, "SomethingNew", "permanent", "SomethingNew"),
        (502, None, "retry", "HTTP_502"),
    ],
)
def test_apns_reasons_map_to_outcomes(
    status: int, reason: str | None, outcome: str, code: str
) -> None:
    body = orjson.dumps({"reason": reason}) if reason else b"<html/>"
    result = map_apns_response(status, body)
    assert (result.outcome.value, result.code, result.provider_status) == (outcome, code, status)


def test_apns_retry_after_is_passed_on_for_retries() -> None:
    result = map_apns_response(429, b'{"reason":"TooManyRequests"}', retry_after=120.0)
    assert result.retry_after_seconds == 120.0


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"reason": 5, "timestamp": "x"}'])
def test_apns_garbage_error_bodies_do_not_crash(body: bytes) -> None:
    assert map_apns_response(503, body).outcome is PushOutcome.RETRY
    dead = map_apns_response(410, body)
    assert dead.outcome is PushOutcome.TOKEN_DEAD and dead.token_invalid_since is None


# -- Retry-After -------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_and_http_dates_and_ignores_garbage() -> None:
    assert parse_retry_after("30") == 30.0
    now = datetime(2026, 11, 22, 18, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sun, 22 Nov 2026 18:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Sun, 22 Nov 2026 17:00:00 GMT", now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
