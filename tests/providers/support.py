"""Provider test helpers: notifications, one-shot sends, emulator switches, secret probes.

Fixtures (``provider_settings``, ``apns``, ``fcm``) live in ``tests/providers/conftest.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from notifier.metrics import AUTH_TOKEN_REFRESHES
from notifier.models import Notification, Platform, Target, new_id
from notifier.providers.base import PushResult
from notifier.providers.factory import build_providers
from notifier.settings import Settings

CREATED = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


def make(platform: Platform = Platform.APNS, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "id": new_id(),
        "app": "app1",
        "target": Target(platform, "ab" * 32),
        "created_at": CREATED,
        "updated_at": CREATED,
        "title": "Hi",
        "body": "text",
        "data": {"k": "v"},
    }
    values.update(fields)
    return Notification(**values)


def fresh(platform: Platform, **fields: Any) -> Notification:
    """A notification to a device token no other test uses (emulator faults are per token)."""
    return make(platform, target=Target(platform, secrets.token_hex(32)), **fields)


def auth_refreshes(provider: str) -> float:
    """How many provider JWTs (APNs) or access tokens (FCM) this process has minted."""
    return float(AUTH_TOKEN_REFRESHES.labels(provider=provider)._value.get())


class FakeClock:
    """Wall-clock time shifted by ``offset`` seconds, for token age tests."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


async def send_with(settings: Settings, notification: Notification) -> PushResult:
    """Send one notification through a provider built from ``settings``, then close it."""
    provider = build_providers(settings)[notification.target.platform]
    try:
        return await provider.send(notification)
    finally:
        await provider.close()


@asynccontextmanager
async def auth_switched(emulator: Any, **switches: int) -> AsyncIterator[None]:
    """Set emulator auth switches (global to it) for the block, then turn them off."""
    await emulator.control.set_auth(**switches)
    try:
        yield
    finally:
        await emulator.control.set_auth(**dict.fromkeys(switches, 0))


async def send_burst(
    emulator: Any, settings: Settings, platform: Platform, count: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send ``count`` fresh notifications at once through one provider, then close it.

    Asserts what a burst must give: every one sent and delivered exactly once, over one to
    four new connections. Returns the emulator summaries before and after.
    """
    provider = build_providers(settings)[platform]
    before = await emulator.control.summary()
    batch = [fresh(platform) for _ in range(count)]
    try:
        results = await asyncio.gather(*(provider.send(n) for n in batch))
    finally:
        await provider.close()
    after = await emulator.control.summary()
    assert all(r.sent for r in results)
    connections = [s["by_platform"][platform.value]["connections"] for s in (before, after)]
    assert 1 <= connections[1] - connections[0] <= 4
    deliveries = await emulator.control.deliveries()
    assert all(deliveries[n.id][0] == 1 for n in batch)
    return before, after


def closed_port_url() -> str:
    """An https URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"


def key_fragments(pem: str) -> list[str]:
    """Distinctive slices of a PEM key body: none may appear anywhere we write."""
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [body[i : i + 24] for i in range(0, len(body) - 24, 40)]
