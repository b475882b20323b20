"""The real APNs client against the emulator over real sockets (TLS + HTTP/2, ES256 JWT).

Faults are set per device token (each test uses fresh tokens); auth switches are global
to the emulator, so tests that set them put them back.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier.metrics import AUTH_TOKEN_REFRESHES, PROVIDER_RESPONSES
from notifier.models import Notification, Platform, Priority, Target
from notifier.providers.apns import ApnsProvider, ProviderToken
from notifier.providers.base import PushOutcome
from notifier.providers.factory import build_providers
from notifier.providers.http2 import TransportConfig
from notifier.settings import Settings, load_settings
from tests.providers.test_mapping import make


def apns_notification(**fields: Any) -> Notification:
    return make(Platform.APNS, target=Target(Platform.APNS, secrets.token_hex(32)), **fields)


def mints() -> float:
    return AUTH_TOKEN_REFRESHES.labels(provider="apns")._value.get()


class FakeClock:
    """Wall-clock time shifted by ``offset`` seconds, for JWT age tests."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def apns_settings(emulator: Any) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        return load_settings(emulator.env, **overrides)

    return build


@pytest.fixture
async def apns(apns_settings: Callable[..., Settings]) -> AsyncIterator[ApnsProvider]:
    provider = build_providers(apns_settings())[Platform.APNS]
    assert isinstance(provider, ApnsProvider)
    yield provider
    await provider.close()


def provider_with_clock(settings: Settings, clock: FakeClock, **options: Any) -> ApnsProvider:
    assert settings.apns_key_file and settings.apns_key_id and settings.apns_team_id
    token = ProviderToken(
        settings.apns_key_file.read_bytes(),
        key_id=settings.apns_key_id,
        team_id=settings.apns_team_id,
        clock=clock,
    )
    return ApnsProvider(
        token,
        topic=options.get("topic", settings.apns_topic or ""),
        endpoint=settings.apns_endpoint,
        transport=TransportConfig(timeout_seconds=10, ca_file=settings.provider_ca_file),
    )


async def test_send_delivers_once_with_the_mapped_headers(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification(ttl_seconds=600, priority=Priority.NORMAL)
    result = await apns.send(n)
    assert (result.outcome, result.provider_status, result.message_id) == (
        PushOutcome.SENT,
        200,
        n.id,
    )
    assert (await emulator.control.delivery(n.id))["count"] == 1
    seen = next(r for r in await emulator.control.recent(50) if r.get("token") == n.target.token)
    assert seen["headers"] == {
        "apns-id": n.id,
        "apns-topic": emulator.env["NOTIFIER_APNS_TOPIC"],
        "apns-push-type": "alert",
        "apns-priority": "5",
        "apns-expiration": str(int(n.created_at.timestamp()) + 600),
        "apns-collapse-id": n.id,
    }
    assert seen["payload"] == {"aps": {"alert": {"title": "Hi", "body": "text"}}, "k": "v"}


async def test_data_only_is_accepted_as_a_background_push(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification(title=None, body=None)
    assert (await apns.send(n)).sent
    seen = next(r for r in await emulator.control.recent(50) if r.get("token") == n.target.token)
    assert seen["headers"]["apns-push-type"] == "background"
    assert seen["payload"]["aps"] == {"content-available": 1}


async def test_unregistered_token_is_dead_since_its_timestamp(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification()
    await emulator.control.dead(n.target.token, since_ms=1_767_225_600_000)
    result = await apns.send(n)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.TOKEN_DEAD,
        "Unregistered",
        410,
    )
    assert result.token_invalid_since == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fault", "outcome", "code", "status"),
    [
        ("bad", PushOutcome.TOKEN_DEAD, "BadDeviceToken", 400),
        ("flaky", PushOutcome.RETRY, "ServiceUnavailable", 503),
    ],
)
async def test_token_faults_map_to_outcomes(
    emulator: Any, apns: ApnsProvider, fault: str, outcome: PushOutcome, code: str, status: int
) -> None:
    n = apns_notification()
    await emulator.control.set_fault(n.target.token, fault)
    counted = PROVIDER_RESPONSES.labels(
        provider="apns", status_class=f"{status // 100}xx", code=code
    )
    before = counted._value.get()
    result = await apns.send(n)
    assert (result.outcome, result.code, result.provider_status) == (outcome, code, status)
    assert await emulator.control.delivery(n.id) is None
    assert counted._value.get() == before + 1


async def test_too_many_requests_is_a_retry_honouring_retry_after(
    emulator: Any, apns: ApnsProvider
) -> None:
    n = apns_notification()
    await emulator.control.rate_limited(n.target.token, 1, retry_after=9)
    result = await apns.send(n)
    assert (result.outcome, result.code, result.retry_after_seconds) == (
        PushOutcome.RETRY,
        "TooManyRequests",
        9.0,
    )
    assert (await apns.send(n)).sent


async def test_wrong_topic_is_permanent(apns_settings: Callable[..., Settings]) -> None:
    provider = build_providers(apns_settings(apns_topic="com.example.other"))[Platform.APNS]
    try:
        result = await provider.send(apns_notification())
    finally:
        await provider.close()
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "BadTopic",
        400,
    )


async def test_oversized_payload_is_permanent_without_a_request(
    emulator: Any, apns: ApnsProvider
) -> None:
    before = await emulator.control.summary()
    result = await apns.send(apns_notification(body="x" * 5000))
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.PERMANENT,
        "PayloadTooLarge",
        None,
    )
    after = await emulator.control.summary()
    assert (after["accepted"], after["rejected"]) == (before["accepted"], before["rejected"])


async def test_slow_answer_is_a_timeout_retry(
    emulator: Any, apns_settings: Callable[..., Settings]
) -> None:
    provider = build_providers(apns_settings(provider_timeout_seconds=0.3))[Platform.APNS]
    n = apns_notification()
    await emulator.control.slow(n.target.token, 2000)
    try:
        result = await provider.send(n)
    finally:
        await provider.close()
        await emulator.control.clear_faults(n.target.token)
    assert (result.outcome, result.code) == (PushOutcome.RETRY, "timeout")


async def test_provider_jwt_is_reused_across_sends(apns_settings: Callable[..., Settings]) -> None:
    provider = build_providers(apns_settings())[Platform.APNS]
    before = mints()
    try:
        results = await asyncio.gather(*(provider.send(apns_notification()) for _ in range(50)))
    finally:
        await provider.close()
    assert all(r.sent for r in results)
    assert mints() == before + 1


async def test_provider_jwt_rotates_after_forty_minutes_not_after_ten(
    apns_settings: Callable[..., Settings],
) -> None:
    clock = FakeClock(offset=-45 * 60)  # first JWT: iat 45 minutes ago, still valid for APNs
    provider = provider_with_clock(apns_settings(), clock)
    try:
        assert (await provider.send(apns_notification())).sent
        before = mints()
        clock.offset = -35 * 60  # 10 minutes later: too soon to rotate
        assert (await provider.send(apns_notification())).sent
        assert mints() == before
        clock.offset = 0  # 45 minutes after the mint: rotate
        assert (await provider.send(apns_notification())).sent
        assert mints() == before + 1
    finally:
        await provider.close()


async def test_expired_provider_token_is_reminted_once_and_the_push_retried(
    emulator: Any, apns: ApnsProvider
) -> None:
    assert (await apns.send(apns_notification())).sent
    before = mints()
    await emulator.control.set_auth(reject_apns=1)
    n = apns_notification()
    result = await apns.send(n)
    assert result.sent
    assert mints() == before + 1
    assert (await emulator.control.delivery(n.id))["count"] == 1


async def test_provider_token_rejected_twice_is_a_config_retry(
    emulator: Any, apns: ApnsProvider
) -> None:
    assert (await apns.send(apns_notification())).sent
    before = mints()
    await emulator.control.set_auth(reject_apns=2)
    try:
        result = await apns.send(apns_notification())
    finally:
        await emulator.control.set_auth(reject_apns=0)
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "config_error",
        403,
    )
    assert mints() == before + 1


async def test_thousand_concurrent_pushes_share_few_connections_and_one_jwt(
    emulator: Any, apns_settings: Callable[..., Settings]
) -> None:
    provider = build_providers(apns_settings())[Platform.APNS]
    summary, before = await emulator.control.summary(), mints()
    batch = [apns_notification() for _ in range(1000)]
    try:
        results = await asyncio.gather(*(provider.send(n) for n in batch))
    finally:
        await provider.close()
    after = await emulator.control.summary()
    assert all(r.sent for r in results)
    assert mints() == before + 1
    connections = (
        after["by_platform"]["apns"]["connections"] - summary["by_platform"]["apns"]["connections"]
    )
    assert 1 <= connections <= 4
    deliveries = await emulator.control.deliveries()
    assert all(deliveries[n.id][0] == 1 for n in batch)


async def test_without_our_ca_the_emulator_is_refused_as_a_connection_retry(
    emulator: Any,
) -> None:
    env = {k: v for k, v in emulator.env.items() if k != "NOTIFIER_PROVIDER_CA_FILE"}
    provider = build_providers(load_settings(env))[Platform.APNS]
    n = apns_notification()
    try:
        result = await provider.send(n)
    finally:
        await provider.close()
    assert (result.outcome, result.code, result.provider_status) == (
        PushOutcome.RETRY,
        "connection",
        None,
    )
    assert result.message and n.target.token not in result.message


def test_a_bad_key_file_fails_at_start_without_echoing_it(tmp_path: Path) -> None:
    key = tmp_path / "key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an EC P-256") as error:
        ProviderToken(key.read_bytes(), key_id="K", team_id="T")
    assert "SECRET" not in str(error.value)


def test_rotation_outside_twenty_to_sixty_minutes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 20 and 60"):
        ProviderToken(b"", key_id="K", team_id="T", rotate_seconds=10 * 60)


async def test_errors_never_reveal_the_key_the_jwt_or_the_device_token(
    emulator: Any, apns_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = apns_settings()
    assert settings.apns_key_file is not None
    pem = settings.apns_key_file.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    secrets_seen = [body[i : i + 24] for i in range(0, len(body) - 24, 40)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{sock.getsockname()[1]}"
    texts: list[str] = []
    n = apns_notification()
    secrets_seen.append(n.target.token)
    with capture_logs() as logs:
        for overrides in ({"apns_endpoint": closed}, {}):
            provider = build_providers(apns_settings(**overrides))[Platform.APNS]
            assert isinstance(provider, ApnsProvider)
            secrets_seen.append(provider._jwt.current())
            if not overrides:
                await emulator.control.set_auth(reject_apns=2)  # 403 twice
            try:
                result = await provider.send(n)
                secrets_seen.append(provider._jwt.current())
            finally:
                await emulator.control.set_auth(reject_apns=0)
                await provider.close()
            assert result.outcome is PushOutcome.RETRY
            texts += [repr(result), str(result.message)]
    captured = capsys.readouterr()
    written = "\n".join([*texts, repr(logs), captured.out, captured.err])
    assert {"apns_provider_token_rejected", "apns_config_error"} <= {e["event"] for e in logs}
    assert not [s for s in secrets_seen if s in written]
