"""Settings: design section 5 defaults, and one clear line naming the variable on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from notifier.settings import (
    LogFormat,
    Settings,
    SettingsError,
    UnknownOutcomePolicy,
    load_settings,
)

PASSWORD = "hunter2-secret"


def settings_error(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    message = str(info.value)
    assert "\n" not in message
    assert PASSWORD not in message
    return message


def test_defaults_match_the_design() -> None:
    s = load_settings({})
    assert s.store_url == "mongodb://127.0.0.1:27017/notifier"
    assert s.store_kind == "mongodb"
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.queue == "notifications"
    assert s.prefetch == 10
    assert s.lock_seconds == 300
    assert s.max_attempts == 5
    assert s.fcm_credentials is None and not s.fcm_enabled
    assert s.fcm_endpoint == "https://fcm.googleapis.com"
    assert (s.apns_key_file, s.apns_key_id, s.apns_team_id, s.apns_topic) == (None,) * 4
    assert not s.apns_enabled
    assert s.apns_endpoint == "https://api.push.apple.com"
    assert s.provider_ca_file is None
    assert s.sweep_interval_seconds == 1
    assert (s.retry_base_seconds, s.retry_max_seconds) == (10, 900)
    assert s.log_format is LogFormat.JSON
    assert s.unknown_outcome is UnknownOutcomePolicy.RESEND


def test_environment_overrides_and_store_kind() -> None:
    s = load_settings(
        {
            "NOTIFIER_STORE_URL": "postgresql://notifier:pw@127.0.0.1:5432/notifier",
            "NOTIFIER_PREFETCH": "64",
            "NOTIFIER_LOG_FORMAT": "console",
            "NOTIFIER_QUEUE": "",  # empty means unset
            "OTHER_VARIABLE": "ignored",
        }
    )
    assert s.store_kind == "postgresql"
    assert s.prefetch == 64
    assert s.log_format is LogFormat.CONSOLE
    assert s.queue == "notifications"
    assert s.dead_letter_queue == "notifications.dead"


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(ValidationError):
        s.prefetch = 5  # type: ignore[misc]
    assert isinstance(s, Settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFIER_STORE_URL", f"http://notifier:{PASSWORD}@127.0.0.1/notifier"),
        ("NOTIFIER_STORE_URL", f"postgresql//notifier:{PASSWORD}@127.0.0.1/notifier"),
        ("NOTIFIER_STORE_URL", f"postgresql://notifier:{PASSWORD}@127.0.0.1:99999/notifier"),
        ("NOTIFIER_STORE_URL", "not a url"),
        ("NOTIFIER_AMQP_URL", f"mongodb://guest:{PASSWORD}@127.0.0.1:5672/"),
        ("NOTIFIER_AMQP_URL", f"amqp://guest:{PASSWORD}@:5672/"),
        ("NOTIFIER_FCM_ENDPOINT", "ftp://fcm.example"),
        ("NOTIFIER_PREFETCH", "ten"),
        ("NOTIFIER_PREFETCH", "1.5"),
        ("NOTIFIER_PREFETCH", "0"),
        ("NOTIFIER_LOCK_SECONDS", "-1"),
        ("NOTIFIER_MAX_ATTEMPTS", "many"),
        ("NOTIFIER_SWEEP_INTERVAL_SECONDS", "soon"),
        ("NOTIFIER_LOG_FORMAT", "xml"),
        ("NOTIFIER_FCM_CREDENTIALS", "/nonexistent/service-account.json"),
        ("NOTIFIER_PROVIDER_CA_FILE", "/nonexistent/ca.pem"),
    ],
)
def test_bad_value_names_its_variable(variable: str, value: str) -> None:
    message = settings_error({variable: value})
    assert message.startswith(variable + ":"), message


def test_retry_max_below_base_is_rejected() -> None:
    message = settings_error(
        {"NOTIFIER_RETRY_BASE_SECONDS": "60", "NOTIFIER_RETRY_MAX_SECONDS": "10"}
    )
    assert message.startswith("NOTIFIER_RETRY_MAX_SECONDS:")


def test_missing_apns_key_file_is_rejected(tmp_path: Path) -> None:
    message = settings_error(
        {
            "NOTIFIER_APNS_KEY_FILE": str(tmp_path / "AuthKey_ABC.p8"),
            "NOTIFIER_APNS_KEY_ID": "ABC",
            "NOTIFIER_APNS_TEAM_ID": "TEAM",
            "NOTIFIER_APNS_TOPIC": "com.example.app",
        }
    )
    assert message.startswith("NOTIFIER_APNS_KEY_FILE:")


@pytest.mark.parametrize(
    "missing",
    [
        "NOTIFIER_APNS_KEY_FILE",
        "NOTIFIER_APNS_KEY_ID",
        "NOTIFIER_APNS_TEAM_ID",
        "NOTIFIER_APNS_TOPIC",
    ],
)
def test_partial_apns_config_names_the_missing_variable(tmp_path: Path, missing: str) -> None:
    key = tmp_path / "AuthKey_ABC.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    env = {
        "NOTIFIER_APNS_KEY_FILE": str(key),
        "NOTIFIER_APNS_KEY_ID": "ABC",
        "NOTIFIER_APNS_TEAM_ID": "TEAM",
        "NOTIFIER_APNS_TOPIC": "com.example.app",
    }
    del env[missing]
    message = settings_error(env)
    assert message.startswith(missing + ":"), message


def test_complete_apns_config_enables_apns(tmp_path: Path) -> None:
    key = tmp_path / "AuthKey_ABC.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    s = load_settings(
        {
            "NOTIFIER_APNS_KEY_FILE": str(key),
            "NOTIFIER_APNS_KEY_ID": "ABC",
            "NOTIFIER_APNS_TEAM_ID": "TEAM",
            "NOTIFIER_APNS_TOPIC": "com.example.app",
        }
    )
    assert s.apns_enabled and s.apns_key_file == key


def test_credential_settings_default_as_documented_and_bad_values_name_the_variable() -> None:
    s = load_settings({})
    assert (s.credential_concurrency, s.credential_clients) == (32, 256)
    assert s.default_credential_concurrency == 128
    assert (s.credential_probe_seconds, s.credential_hold_seconds) == (10.0, 86_400.0)
    for name, bad in (
        ("NOTIFIER_CREDENTIAL_CONCURRENCY", "0"),
        ("NOTIFIER_DEFAULT_CREDENTIAL_CONCURRENCY", "0"),
        ("NOTIFIER_CREDENTIAL_CLIENTS", "many"),
        ("NOTIFIER_CREDENTIAL_PROBE_SECONDS", "-1"),
        ("NOTIFIER_CREDENTIAL_HOLD_SECONDS", "0"),
    ):
        assert name in settings_error({name: bad})
