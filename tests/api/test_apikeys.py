"""API key lifecycle as an operator runs it: ``notifier apikey create|list|revoke`` beside
two real API processes. A revoked key stops working on both replicas within the
documented bound (``REVOCATION_SECONDS``, at most 5 s), though each had it cached."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from emulator.testing import free_port
from notifier.apikeys import REVOCATION_SECONDS, hash_key
from notifier.settings import Settings, load_settings
from tests.api.processes import settings_env, spawn_api, stop, wait_healthy
from tests.conftest import AMQP_URL, ROOT
from tests.support import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(pg_url: str) -> Settings:
    return load_settings(
        {
            "NOTIFIER_STORE_URL": pg_url,
            "NOTIFIER_AMQP_URL": AMQP_URL,
            "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replicas(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    """Base URLs of two API processes on the same store."""
    logs = tmp_path_factory.mktemp("apikeys")
    ports = [free_port(), free_port()]
    procs = [spawn_api(settings, p, logs / f"api-{p}.log") for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            await wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        for proc in procs:
            stop(proc)


def apikey(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", "apikey", *args],
        env={**settings_env(settings), "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _status(session: aiohttp.ClientSession, url: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.get(f"{url}/v1/notifications?limit=1", headers=headers) as r:
        return r.status


def test_the_bound_is_at_most_5_seconds() -> None:
    assert REVOCATION_SECONDS <= 5


async def test_list_shows_ids_never_keys(settings: Settings, tmp_path: Path) -> None:
    app = f"list-{secrets.token_hex(3)}"
    created = apikey(settings, "create", "--app", app, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id = hash_key(key)[:16]
    assert f"key id {key_id}" in created.stderr
    listed = apikey(settings, "list", "--app", app, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["id", "created", "(UTC)", "app"]
    assert [r.split()[0] for r in rows[1:]] == [key_id]
    assert rows[1].split()[-1] == app
    assert key not in listed.stdout + listed.stderr
    assert hash_key(key) not in listed.stdout  # nor the whole hash


async def test_a_revoked_key_stops_working_on_every_replica_within_the_bound(
    settings: Settings, replicas: list[str], tmp_path: Path
) -> None:
    app = f"revoke-{secrets.token_hex(3)}"
    key = apikey(settings, "create", "--app", app, cwd=tmp_path).stdout.strip()
    kept = apikey(settings, "create", "--app", app, cwd=tmp_path).stdout.strip()
    async with aiohttp.ClientSession() as session:
        # Both replicas now hold the key in their caches.
        assert [await _status(session, url, key) for url in replicas] == [200, 200]
        revoked = apikey(settings, "revoke", hash_key(key)[:16], cwd=tmp_path)
        revoked_at = time.monotonic()
        assert revoked.returncode == 0, revoked.stderr
        assert app in revoked.stdout

        async def refused(url: str) -> float:
            async def now_401() -> bool:
                return await _status(session, url, key) == 401

            await wait_for(now_401, timeout=5, interval=0.1, what=f"{url} refusing the key")
            return time.monotonic() - revoked_at

        delays = await asyncio.gather(*(refused(url) for url in replicas))
        assert max(delays) <= 5
        # Refused for good, on both; the app's other key still works.
        assert [await _status(session, url, key) for url in replicas] == [401, 401]
        assert [await _status(session, url, kept) for url in replicas] == [200, 200]
    assert hash_key(key)[:16] not in apikey(settings, "list", "--app", app, cwd=tmp_path).stdout
    again = apikey(settings, "revoke", hash_key(key)[:16], cwd=tmp_path)
    assert again.returncode == 1 and "no API key" in again.stderr


async def test_revoke_never_echoes_what_is_not_an_id(settings: Settings, tmp_path: Path) -> None:
    """A key pasted where its id belongs is refused without being printed back."""
    key = apikey(settings, "create", "--app", "echo", cwd=tmp_path).stdout.strip()
    result = apikey(settings, "revoke", key, cwd=tmp_path)
    assert result.returncode == 2
    assert key not in result.stdout + result.stderr
    assert "16 hex characters" in result.stderr
