"""Fixtures of the emulator's tests: the session's emulator, reset around each test, and an
HTTP/2 client trusting only its generated CA (as the product's clients do)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from emulator.testing import EmulatorHandle


@pytest.fixture
async def emu(emulator: EmulatorHandle) -> AsyncIterator[EmulatorHandle]:
    await emulator.control.reset()
    yield emulator
    await emulator.control.reset()


@pytest.fixture
async def client(emu: EmulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    context = ssl.create_default_context(cafile=str(emu.ca_file))
    async with httpx.AsyncClient(
        base_url=emu.endpoint, http2=True, verify=context, trust_env=False, timeout=30
    ) as c:
        yield c
