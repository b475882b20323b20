"""Graceful stop: the socket closes, requests in flight still get their answer, then exit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest

from api.server import run
from emulator.testing import free_port
from notifier.apikeys import generate_key, hash_key
from notifier.broker import delete_queues
from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store import NotificationStore
from tests.api.conftest import APNS_TOKEN
from tests.support import wait_for

BODY = {"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"}


async def _waiting_inserts(conn: asyncpg.Connection) -> int:
    """Sessions of this database waiting on a lock (the API's blocked inserts)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
    )


# A PostgreSQL table lock holds the inserts in flight; the stop path itself does not depend
# on the store.
@pytest.mark.stores("postgresql")
async def test_stop_finishes_requests_in_flight(
    make_settings: Callable[..., Settings], store: NotificationStore, pg_url: str
) -> None:
    settings = make_settings()
    key = generate_key()
    await store.add_api_key("graceful", hash_key(key), utcnow())
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(run(settings, "127.0.0.1", port, stop))
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    blocker = await asyncpg.connect(pg_url)
    try:
        async with aiohttp.ClientSession(url, headers=headers) as session:

            async def up() -> bool:
                try:
                    async with session.get("/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, what="API up")
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE notifications IN EXCLUSIVE MODE")

                async def post() -> int:
                    async with session.post("/v1/notifications", json=BODY) as r:
                        return r.status

                posts = [asyncio.create_task(post()) for _ in range(10)]
                await wait_for(lambda: _waiting_inserts(blocker), what="inserts in flight")
                stop.set()
                await wait_for(lambda: not _accepts(port), what="listening socket closed")
            assert await asyncio.gather(*posts) == [202] * 10
        await asyncio.wait_for(server, 30)
        counts = await store.counts_by_status("graceful")
        assert sum(counts.values()) == 10
    finally:
        stop.set()
        await blocker.close()
        await delete_queues(settings)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
