"""Whatever the API accepts, the providers accept (issue 13, item 6).

A request the API answers 202 must not fail at delivery for its shape: its token, collapse
key, data keys and payload size pass the provider client's own checks and the emulator's
FCM and APNs validation. Pure: the request models, the provider clients' request builders
and the emulator's validators, no server.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from api.schemas import NotificationRequest
from api.views import build_notification
from emulator.apns import _check_headers, _check_payload
from emulator.fcm_message import MessageError, check_message
from notifier.models import Notification, Platform, Target, utcnow
from notifier.providers.apns import build_apns_request, check_apns_request
from notifier.providers.fcm import build_fcm_message

TOPIC = "com.example.app"
APNS_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-token-1"


def _accepted(body: dict[str, Any]) -> NotificationRequest | None:
    try:
        return NotificationRequest.model_validate(body)
    except ValidationError:
        return None


def _notification(req: NotificationRequest, target: Target) -> Notification:
    return build_notification(req, "app1", target, utcnow())


def fcm_refusal(n: Notification) -> str | None:
    """Why FCM (the emulator's validation of a v1 send body) refuses this push, or None."""
    try:
        check_message(orjson.dumps({"message": build_fcm_message(n)}))
    except MessageError as exc:
        return exc.message
    return None


def apns_refusal(n: Notification) -> str | None:
    """Why APNs (the client's own check, then the emulator's) refuses this push, or None."""
    request = build_apns_request(n, TOPIC)
    refused = check_apns_request(request)
    if refused is not None:
        return refused.code
    if request.headers.get("apns-topic") != TOPIC:  # the emulator's key has this one topic
        return "BadTopic"
    reason = _check_headers(request.headers)
    if reason is not None:
        return reason
    problem = _check_payload(request.body, request.headers["apns-push-type"])
    return problem[1] if problem is not None else None


# Short words a broken client sends as a token; FCM answers INVALID_ARGUMENT to each.
GARBAGE_FCM_TOKENS = ["1e100", "else", "true", "null", "0", "-", "a:b"]
# Shapes of real registration tokens (FID:APA91b..., legacy APA91b..., ~150-350 chars).
REAL_FCM_TOKENS = [
    "cQ1b2C3d4E5f6G7h8I9j0K:APA91bH" + "x_Y-z" * 24,
    "APA91b" + "AbC-_9" * 25,
    "eXaMpLeIiD:APA91b" + "q" * 300,
]


@pytest.mark.parametrize("token", GARBAGE_FCM_TOKENS + REAL_FCM_TOKENS)
def test_the_api_accepts_an_fcm_token_exactly_when_fcm_does(token: str) -> None:
    req = _accepted({"to": {"platform": "fcm", "token": token}, "title": "Hi"})
    probe = _notification(
        NotificationRequest.model_validate(
            {"to": {"platform": "fcm", "token": FCM_TOKEN}, "title": "Hi"}
        ),
        Target(Platform.FCM, token),
    )
    assert (req is not None) == (fcm_refusal(probe) is None), token


_FCM_ALPHABET = "0123456789abcdefXYZ_:.-+/= é\n"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_FCM_ALPHABET, max_size=40))
def test_any_string_is_an_fcm_token_to_the_api_exactly_when_it_is_to_fcm(token: str) -> None:
    accepted = _accepted({"to": {"platform": "fcm", "token": token}, "title": "Hi"}) is not None
    n = _notification(
        NotificationRequest.model_validate(
            {"to": {"platform": "fcm", "token": FCM_TOKEN}, "title": "Hi"}
        ),
        Target(Platform.FCM, token),
    )
    assert accepted == (fcm_refusal(n) is None)


_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=2100)
_KEYS = st.sampled_from(["k", "aps", "APS", "from", "google.a", "gcm", "notification_id"]) | (
    st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=12)
)
_CONTENT = st.fixed_dictionaries(
    {},
    optional={
        "title": _TEXT,
        "body": _TEXT,
        "data": st.dictionaries(_KEYS, _TEXT, max_size=4),
        "collapse_key": st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=70),
    },
)


@settings(max_examples=300, deadline=None)
@given(_CONTENT)
# a collapse key that is not an HTTP header value (APNs sends it as apns-collapse-id)
@example({"title": "Hi", "collapse_key": "é"})
@example({"title": "Hi", "collapse_key": " leading space"})
# FCM counts data keys and values plus our notification_id: 4,102 bytes, APNs 4,088
@example({"data": {"k": "y" * 4050}})
# a data key "aps" was measured in place of the real aps dictionary
@example({"title": "t" * 2100, "data": {"aps": "", "k": "v" * 2050}})
def test_content_the_api_accepts_every_provider_accepts(content: dict[str, Any]) -> None:
    req = _accepted({"to": {"platform": "apns", "token": APNS_TOKEN}, **content})
    if req is None:
        return
    apns = _notification(req, Target(Platform.APNS, APNS_TOKEN))
    fcm = _notification(req, Target(Platform.FCM, FCM_TOKEN))
    assert (apns_refusal(apns), fcm_refusal(fcm)) == (None, None)
