"""The provider rules table (notifier/providers/spec.py): each rule, and the clients and the
emulator reading it.

What the API does with the table is in tests/api/test_provider_rules.py.
"""

from __future__ import annotations

import orjson
import pytest

from emulator.fcm_message import MessageError, check_message
from notifier.models import Platform, Target
from notifier.providers.apns import build_apns_request
from notifier.providers.fcm import build_fcm_message
from notifier.providers.spec import APNS, FCM, SPECS, PlatformSpec, fcm_measure, spec_for
from tests.providers.support import make


def test_every_platform_has_a_spec() -> None:
    assert set(SPECS) == set(Platform)
    assert all(spec_for(p).platform is p for p in Platform)


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("ab" * 32, True),  # today's 32-byte tokens
        ("0F" * 100, True),  # longer ones Apple may issue
        ("ab" * 31, False),
        ("ab" * 101, False),
        ("a" * 65, False),  # odd: not whole bytes
        ("g" * 64, False),
        ("ab" * 32 + "\n", False),
    ],
)
def test_apns_token_rule(token: str, ok: bool) -> None:
    assert APNS.token_ok(token) is ok


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("cQ1b2C3d4E5f6G7h8I9j0K:APA91bH" + "x_Y-z" * 24, True),
        ("APA91b" + "AbC-_9" * 25, True),
        ("fcm-token-1", True),
        ("a.b" * 3, True),
        ("1e100", False),
        ("else", False),
        ("a" * 1025, False),
        ("abc def ghi", False),
        ("tök" * 3, False),
        ("fcm-token-1\n", False),
    ],
)
def test_fcm_token_rule_and_the_emulator_agree(token: str, ok: bool) -> None:
    assert FCM.token_ok(token) is ok
    message = build_fcm_message(make(Platform.FCM, target=Target(Platform.FCM, token)))
    try:
        check_message(orjson.dumps({"message": message}))
        emulator_ok = True
    except MessageError as exc:
        assert exc.token_level
        emulator_ok = False
    assert emulator_ok is ok


@pytest.mark.parametrize(
    ("collapse_id", "ok"),
    [
        ("c1", True),
        ("a b", True),
        ("~" * 64, True),
        ("~" * 65, False),
        ("é", False),
        (" a", False),
        ("a ", False),
        ("a\tb", False),
        ("", False),
    ],
)
def test_apns_collapse_id_is_a_header_value_of_64_bytes(collapse_id: str, ok: bool) -> None:
    assert APNS.collapse_ok(collapse_id) is ok
    assert FCM.collapse_ok(collapse_id)  # FCM states no rule of its own


@pytest.mark.parametrize(
    ("spec", "key", "reserved"),
    [
        (FCM, "from", True),
        (FCM, "From", True),
        (FCM, "gcm", True),
        (FCM, "google.c.a", True),
        (FCM, "GOOGLE", True),
        (FCM, "notification_id", False),  # ours, not FCM's: refused by data_key_ok
        (FCM, "aps", False),
        (APNS, "aps", True),
        (APNS, "from", False),
    ],
)
def test_reserved_data_keys(spec: PlatformSpec, key: str, reserved: bool) -> None:
    assert spec.reserved(key) is reserved


def test_our_own_fcm_data_key_is_refused_to_requests() -> None:
    assert not FCM.data_key_ok("notification_id")
    assert FCM.data_key_ok("k")
    assert not FCM.data_key_ok("")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"title": None, "body": None, "data": {"k": "v" * 100}},
        {"title": 'quotes " and \\ escape', "body": "é" * 50, "data": {"ü": "\n"}},
        {"title": "only a title", "body": None, "data": {}},
    ],
)
def test_sizes_measure_what_the_clients_send(fields: dict[str, object]) -> None:
    apns = make(Platform.APNS, **fields)
    assert APNS.payload_size(apns) == len(build_apns_request(apns, "t").body)
    fcm = make(Platform.FCM, target=Target(Platform.FCM, "fcm-token-1"), **fields)
    message = build_fcm_message(fcm)
    assert FCM.payload_size(fcm) == fcm_measure(message["data"], message.get("notification"))
