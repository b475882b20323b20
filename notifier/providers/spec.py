"""What each push provider accepts: one table per platform (PROTOCOLS.md 1.3, 2.2).

The API validates requests with these rules and publishes them in its OpenAPI document;
the provider clients build their payloads with the same functions, so what the API
measured is what goes out; the emulator refuses tokens and collapse ids by the same
patterns. A rule here is syntax the provider checks before delivery: a well-formed token
can still be dead.

To add a provider, add its spec to :data:`SPECS` (and its ``Platform`` member).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from notifier.models import Platform

# A notification id is a UUIDv7 in text form: the apns-id, and FCM's data["notification_id"].
ID_LENGTH = 36
ID_DATA_KEY = "notification_id"


class Content(Protocol):
    """What a payload is built from: a stored notification or a request to make one."""

    @property
    def title(self) -> str | None: ...

    @property
    def body(self) -> str | None: ...

    @property
    def data(self) -> Mapping[str, str]: ...


def is_data_only(content: Content) -> bool:
    return content.title is None and content.body is None


def _shown(content: Content) -> dict[str, str]:
    return {k: v for k, v in (("title", content.title), ("body", content.body)) if v is not None}


# --- APNs ------------------------------------------------------------------------------


def apns_payload(content: Content) -> dict[str, Any]:
    """``{<data keys>, "aps": {...}}``: custom keys beside ``aps``; data-only is a background
    push. ``aps`` is a reserved data key, so no custom key is lost."""
    aps: dict[str, Any] = (
        {"content-available": 1} if is_data_only(content) else {"alert": _shown(content)}
    )
    return {**content.data, "aps": aps}


def apns_payload_size(content: Content) -> int:
    """Bytes of the JSON body APNs receives (it limits the body as sent)."""
    return len(orjson.dumps(apns_payload(content)))


# --- FCM -------------------------------------------------------------------------------


def fcm_data(content: Content, notification_id: str) -> dict[str, str]:
    """``message.data``: the custom keys plus the notification id (for the app to dedupe)."""
    return {**content.data, ID_DATA_KEY: notification_id}


def fcm_notification(content: Content) -> dict[str, str] | None:
    """``message.notification``, or None for a data-only message."""
    return None if is_data_only(content) else _shown(content)


def fcm_measure(data: Mapping[str, str], notification: Mapping[str, str] | None) -> int:
    """FCM's payload size: the UTF-8 bytes of every data key and value and of the shown
    notification's values (the emulator measures a received message the same way)."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    return size + sum(len(v.encode()) for v in (notification or {}).values())


def fcm_payload_size(content: Content) -> int:
    """The payload size of ``content`` once the client adds the notification id."""
    return fcm_measure(fcm_data(content, "0" * ID_LENGTH), fcm_notification(content))


# --- the table -------------------------------------------------------------------------

# An apns-collapse-id is an HTTP/2 header value (at most 64 bytes; RFC 9113 8.2.1 forbids
# leading or trailing whitespace): printable ASCII, inner spaces allowed.
_HEADER_VALUE_64 = r"^[!-~](?:[ -~]{0,62}[!-~])?$"


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """One provider's rules. Patterns are anchored and read the same in Python and in
    JSON Schema (ECMA 262), so the OpenAPI document carries them verbatim."""

    platform: Platform
    token_pattern: str
    token_rule: str  # the token rule in words (422 messages, documentation)
    payload_limit: int  # bytes, as ``payload_size`` measures them
    payload_rule: str  # how the payload is measured, in words
    payload_size: Callable[[Content], int]
    reserved_keys: frozenset[str]  # data keys the provider refuses, compared in lower case
    reserved_prefixes: tuple[str, ...] = ()  # refused by prefix, lower case
    client_keys: frozenset[str] = frozenset()  # data keys our client sets itself
    collapse_pattern: str | None = None  # None: the provider takes any string
    collapse_rule: str = ""

    def token_ok(self, token: str) -> bool:
        return _compiled(self.token_pattern).match(token) is not None

    def collapse_ok(self, collapse_id: str) -> bool:
        pattern = self.collapse_pattern
        return pattern is None or _compiled(pattern).match(collapse_id) is not None

    def reserved(self, key: str) -> bool:
        """The provider refuses a message with this data key."""
        lowered = key.lower()
        return lowered in self.reserved_keys or lowered.startswith(self.reserved_prefixes)

    def data_key_ok(self, key: str) -> bool:
        """A data key a request may carry: not reserved, not one our client writes."""
        return bool(key) and not self.reserved(key) and key not in self.client_keys


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        # \Z, not $: Python's $ also matches before a final newline
        compiled = _PATTERNS[pattern] = re.compile(pattern.removesuffix("$") + r"\Z")
    return compiled


APNS = PlatformSpec(
    platform=Platform.APNS,
    # Apple: "don't assume a fixed token length"; today's are 32 bytes (64 hex digits).
    token_pattern=r"^(?:[0-9a-fA-F]{2}){32,100}$",
    token_rule="an APNs token is 64 to 200 hexadecimal digits, an even number of them",
    payload_limit=4096,
    payload_rule=(
        'APNs: the JSON body {"aps": {"alert": {"title", "body"}}, <data keys>} '
        '(data-only: {"aps": {"content-available": 1}, <data keys>}), at most 4096 bytes'
    ),
    payload_size=apns_payload_size,
    # a custom "aps" would collide with the dictionary APNs reads
    reserved_keys=frozenset({"aps"}),
    collapse_pattern=_HEADER_VALUE_64,
    collapse_rule=(
        "the APNs apns-collapse-id header: 1 to 64 printable ASCII characters, "
        "no leading or trailing space"
    ),
)

FCM = PlatformSpec(
    platform=Platform.FCM,
    # Registration tokens are opaque, ~150-350 characters of [A-Za-z0-9_:-] (older
    # Instance ID ones may hold "."); FCM refuses short words ("else", "1e100") as
    # INVALID_ARGUMENT. 1,024 bounds every store index entry.
    token_pattern=r"^[A-Za-z0-9_:.\-]{8,1024}$",
    token_rule="an FCM token is 8 to 1024 characters of A-Z a-z 0-9 _ : . -",
    payload_limit=4096,
    payload_rule=(
        "FCM: the UTF-8 bytes of every data key and value, of title and body, and of the "
        f'"{ID_DATA_KEY}" entry the service adds ({len(ID_DATA_KEY) + ID_LENGTH} bytes), '
        "at most 4096"
    ),
    payload_size=fcm_payload_size,
    reserved_keys=frozenset({"from", "gcm"}),
    reserved_prefixes=("google",),
    client_keys=frozenset({ID_DATA_KEY}),
)

SPECS: Mapping[Platform, PlatformSpec] = {spec.platform: spec for spec in (FCM, APNS)}
assert set(SPECS) == set(Platform), "every Platform needs a spec"


def spec_for(platform: Platform) -> PlatformSpec:
    return SPECS[platform]
