"""Provider fixtures: settings pointing at the session's emulator, and open clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from notifier.models import Platform
from notifier.providers.apns import ApnsProvider
from notifier.providers.factory import build_providers
from notifier.providers.fcm import FcmProvider
from notifier.settings import Settings, load_settings


@pytest.fixture
def provider_settings(emulator: Any) -> Callable[..., Settings]:
    """Build settings for the emulator (its NOTIFIER_* env), with overrides."""

    def build(**overrides: Any) -> Settings:
        return load_settings(emulator.env, **overrides)

    return build


@pytest.fixture
async def apns(provider_settings: Callable[..., Settings]) -> AsyncIterator[ApnsProvider]:
    provider = build_providers(provider_settings())[Platform.APNS]
    assert isinstance(provider, ApnsProvider)
    yield provider
    await provider.close()


@pytest.fixture
async def fcm(provider_settings: Callable[..., Settings]) -> AsyncIterator[FcmProvider]:
    provider = build_providers(provider_settings())[Platform.FCM]
    assert isinstance(provider, FcmProvider)
    yield provider
    await provider.close()
