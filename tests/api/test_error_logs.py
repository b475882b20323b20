"""An error in the API never writes the API key or the device token into its log.

A real API process, a real PostgreSQL refusal: the test database gets a CHECK constraint
that refuses one title (``refusing_settings``), so the store write fails the way a driver
error does (PostgreSQL's answer even quotes the failing row, token included).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest

from notifier.apikeys import generate_key, hash_key
from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store import open_store
from tests.api.conftest import POISON_TITLE
from tests.api.processes import live_api


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_a_store_error_logs_neither_the_key_nor_the_token(
    refusing_settings: Settings, tmp_path: Path, log_format: str
) -> None:
    store = await open_store(refusing_settings, setup=False)
    key = generate_key()
    await store.add_api_key("app-logs", hash_key(key), utcnow())
    await store.close()
    token = "fcm-" + secrets.token_urlsafe(120)  # the length of a real FCM token
    log = tmp_path / "api.log"
    async with (
        live_api(refusing_settings, log, NOTIFIER_LOG_FORMAT=log_format) as base_url,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        body = {"to": {"platform": "fcm", "token": token}, "title": POISON_TITLE}
        async with http.post(f"{base_url}/v1/notifications", json=body) as r:
            assert r.status == 500, await r.text()
            assert r.content_type == "application/problem+json"
    text = log.read_text()
    assert "unhandled_error" in text  # the error was logged: the search below means something
    assert "CheckViolationError" in text  # and names what failed
    assert key not in text
    assert token not in text
    assert token[:40] not in text  # not even a large part of it
    longest = max(len(line) for line in text.splitlines())
    assert longest < 4096, f"a log line of {longest} characters"
