"""Validation of an FCM v1 send body (PROTOCOLS.md 1.3), as strict as Google's parser.

A problem with the target token is *token-level* (400 with ``FcmError INVALID_ARGUMENT``);
anything else is a payload problem (400 with ``google.rpc.BadRequest`` field violations).
Token syntax, reserved data keys and the payload measure are the project's FCM rules
(``notifier.providers.spec.FCM``), the same table the API validates with.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from notifier.providers.spec import FCM, fcm_measure

MAX_PAYLOAD = FCM.payload_limit
MAX_TOPIC_PAYLOAD = 2048
MAX_TTL_SECONDS = 2_419_200
_TTL = re.compile(r"(\d+)(?:\.\d{1,9})?s")
_TARGETS = ("token", "topic", "condition", "fid")
_MESSAGE_FIELDS = {
    *_TARGETS,
    "name",
    "notification",
    "data",
    "android",
    "apns",
    "webpush",
    "fcm_options",
}
_ANDROID_FIELDS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
}
_NOTIFICATION_FIELDS = {"title", "body", "image"}


class MessageError(Exception):
    """The message is refused; ``token_level`` tells a bad token from a bad payload."""

    def __init__(self, field: str, message: str, *, token_level: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.token_level = token_level


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(field, f"Invalid value at '{field}': expected an object.")
    return value


def _check_unknown(obj: dict[str, Any], allowed: set[str], field: str) -> None:
    for key in obj:
        if key not in allowed:
            raise MessageError(field, f'Invalid JSON payload received. Unknown name "{key}".')


def _check_data(value: Any, field: str) -> int:
    """Check a ``map<string,string>``; returns its size in bytes (keys and values)."""
    data = _object(value, field)
    for key, item in data.items():
        if not isinstance(item, str):
            raise MessageError(
                f"{field}[{key}].value", f"Invalid value at '{field}': not a string."
            )
        if FCM.reserved(key):
            raise MessageError(f"{field}[{key}].key", f"Invalid data key '{key}': reserved.")
    return fcm_measure(data, None)


def _check_notification(value: Any, field: str) -> int:
    notification = _object(value, field)
    _check_unknown(notification, _NOTIFICATION_FIELDS, field)
    for key, item in notification.items():
        if not isinstance(item, str):
            raise MessageError(f"{field}.{key}", f"Invalid value at '{field}.{key}'.")
    return fcm_measure({}, notification)


def _check_android(value: Any) -> int:
    android = _object(value, "message.android")
    _check_unknown(android, _ANDROID_FIELDS, "message.android")
    priority = android.get("priority")
    if priority is not None and (
        not isinstance(priority, str) or priority.upper() not in ("HIGH", "NORMAL")
    ):
        raise MessageError(
            "message.android.priority", "Invalid value at 'message.android.priority'."
        )
    ttl = android.get("ttl")
    if ttl is not None:
        match = _TTL.fullmatch(ttl) if isinstance(ttl, str) else None
        if match is None or int(match.group(1)) > MAX_TTL_SECONDS:
            raise MessageError("message.android.ttl", "Invalid value at 'message.android.ttl'.")
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and not isinstance(collapse_key, str):
        raise MessageError("message.android.collapse_key", "Invalid collapse_key.")
    size = 0
    if "data" in android:
        size += _check_data(android["data"], "message.android.data")
    if "notification" in android:
        _object(android["notification"], "message.android.notification")
    return size


def _check_target(message: dict[str, Any]) -> str:
    targets = [name for name in _TARGETS if name in message]
    if len(targets) != 1:
        raise MessageError("message", "Exactly one of token, topic, condition or fid is required.")
    target = targets[0]
    value = message[target]
    if not isinstance(value, str) or not value:
        raise MessageError(f"message.{target}", f"Invalid value at 'message.{target}'.")
    if target == "token" and not FCM.token_ok(value):
        raise MessageError(
            "message.token",
            "The registration token is not a valid FCM registration token",
            token_level=True,
        )
    if target == "topic" and value.startswith("/topics/"):
        raise MessageError("message.topic", "Topic name must not start with /topics/.")
    return target


def check_message(body: bytes) -> tuple[dict[str, Any], bool]:
    """The ``message`` of a valid send body and its ``validate_only`` flag."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError("", "Invalid JSON payload received.") from exc
    request = _object(request, "request")
    _check_unknown(request, {"message", "validate_only"}, "request")
    validate_only = request.get("validate_only", False)
    if not isinstance(validate_only, bool):
        raise MessageError("validate_only", "Invalid value at 'validate_only'.")
    message = _object(request.get("message"), "message")
    _check_unknown(message, _MESSAGE_FIELDS, "message")
    target = _check_target(message)
    size = 0
    if "data" in message:
        size += _check_data(message["data"], "message.data")
    if "notification" in message:
        size += _check_notification(message["notification"], "message.notification")
    if "android" in message:
        size += _check_android(message["android"])
    for name in ("apns", "webpush", "fcm_options"):
        if name in message:
            _object(message[name], f"message.{name}")
    limit = MAX_TOPIC_PAYLOAD if target in ("topic", "condition") else MAX_PAYLOAD
    if size > limit:
        raise MessageError("message", f"Message is too big: {size} bytes > {limit}.")
    return message, validate_only
