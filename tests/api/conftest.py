"""Fixtures for the API tests: a real app on a real server against PostgreSQL and RabbitMQ."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import build_app
from notifier.apikeys import generate_key, hash_key
from notifier.broker import Broker, decode, delete_queues, queue_for
from notifier.models import Lane, Status, utcnow
from notifier.settings import Settings, load_settings
from notifier.store import NotificationStore, open_store
from tests.conftest import AMQP_URL
from tests.support import wait_for

APNS_TOKEN = "a" * 64
FCM_TOKEN = "fcm-token-1"


def padded_json(body: Any, size: int) -> bytes:
    """``body`` as JSON followed by whitespace up to ``size`` bytes: valid, only too big."""
    raw = orjson.dumps(body)
    return raw + b" " * (size - len(raw))


async def in_chunks(raw: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """``raw`` as an async generator: aiohttp's client sends it chunked (no Content-Length)."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    store: NotificationStore
    broker: Broker
    settings: Settings
    app_name: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def post(self, path: str, body: Any, **headers: str) -> Any:
        return await self.client.post(path, json=body, headers={**self.auth, **headers})

    async def stored(self) -> int:
        counts = await self.store.counts_by_status(self.app_name)
        return sum(counts.values())

    async def queued(self, lane: Lane | None = None) -> int:
        """How many notification ids :meth:`queued_ids` finds."""
        return len(await self.queued_ids(lane))

    async def queued_ids(self, lane: Lane | None = None) -> list[str]:
        """Notification ids ready in this test's transactional queue and this app's bulk
        queue (``lane``: that lane's only); a message may carry several.

        Reads every message without ack, requeues them all and waits until the queue holds
        them again, so the next call sees the same. A connection of its own, not robust: a
        robust channel caches declares, and reopens after a queue that is not there (a bulk
        queue nothing was published to is not declared: nothing is queued in it).
        """
        lanes = list(Lane) if lane is None else [lane]
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection:
            found: list[str] = []
            for each in lanes:
                found += await _read_back(connection, queue_for(self.settings, each, self.app_name))
            return found

    async def new_key(self, app_name: str | None = None) -> str:
        key = generate_key()
        await self.store.add_api_key(app_name or self.app_name, hash_key(key), utcnow())
        return key


async def _read_back(connection: AbstractConnection, name: str) -> list[str]:
    """The ids in the messages of queue ``name``, each read without ack and requeued."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return []
    messages: list[AbstractIncomingMessage] = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        messages.append(message)
    for message in messages:
        await message.nack(requeue=True)

    async def ready() -> bool:
        # at least: the API may publish meanwhile (a replay's publish, for one)
        declared = await queue.declare()
        return (declared.message_count or 0) >= len(messages)

    await wait_for(ready, timeout=10, what="the read messages back in the queue")
    await channel.close()
    return [i for m in messages for i in decode(m.body) or ()]


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[NotificationStore]:
    s = await open_store(make_settings())
    yield s
    await s.close()


@pytest.fixture
async def api_factory(
    make_settings: Callable[..., Settings], store: NotificationStore
) -> AsyncIterator[Callable[..., Any]]:
    """Start APIs (each with its own key and app name); all stopped at the end of the test."""
    started: list[Api] = []

    async def start(
        *,
        app_store: NotificationStore | None = None,
        same_as: Api | None = None,
        **overrides: Any,
    ) -> Api:
        """``app_store``: the store the app uses (default: the test's); ``same_as``: share
        that API's queue, app name and key (a second replica)."""
        settings = same_as.settings if same_as is not None else make_settings(**overrides)
        broker = await Broker.connect(settings)
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(build_app(settings, app_store or store, broker), host="127.0.0.1")
        )
        await client.start_server()
        app_name = same_as.app_name if same_as is not None else f"app-{secrets.token_hex(4)}"
        api = Api(client, store, broker, settings, app_name, "")
        api.key = same_as.key if same_as is not None else await api.new_key()
        started.append(api)
        return api

    yield start
    for api in started:
        await api.client.close()
    for settings in {a.settings.queue: a.settings for a in started}.values():
        apps = {a.app_name for a in started if a.settings.queue == settings.queue}
        await delete_queues(settings, apps)


@pytest.fixture
async def api(api_factory: Callable[..., Any]) -> Api:
    instance: Api = await api_factory()
    return instance


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shared_api(pg_url: str) -> AsyncIterator[Api]:
    """One API for a whole module of tests that publish nothing (rejections only)."""
    env = {
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
    }
    settings = load_settings(env)
    module_store = await open_store(settings)
    broker = await Broker.connect(settings)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(build_app(settings, module_store, broker), host="127.0.0.1")
    )
    await client.start_server()
    yield Api(client, module_store, broker, settings, "", "")
    await client.close()
    await module_store.close()
    await delete_queues(settings)


@pytest.fixture
async def rejecting_api(shared_api: Api) -> Api:
    """The module's shared API seen through a new app (so counts start at zero)."""
    api = Api(
        shared_api.client,
        shared_api.store,
        shared_api.broker,
        shared_api.settings,
        f"app-{secrets.token_hex(4)}",
        "",
    )
    api.key = await api.new_key()
    return api


def count_open(counts: dict[Status, int]) -> int:
    return sum(counts.values())


POISON_TITLE = "refused-by-a-check-constraint"


@pytest.fixture
async def refusing_settings(fresh_pg_url: str) -> AsyncIterator[Settings]:
    """Settings on a database of this test's own whose notifications table refuses the
    title ``POISON_TITLE`` (a CHECK constraint): a write that passes validation and that
    the real store refuses, as a driver error."""
    settings = load_settings(
        {
            "NOTIFIER_STORE_URL": fresh_pg_url,
            "NOTIFIER_AMQP_URL": AMQP_URL,
            "NOTIFIER_QUEUE": f"test.refusing.{secrets.token_hex(4)}",
        }
    )
    store = await open_store(settings)
    await store.close()
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        await conn.execute(
            "ALTER TABLE notifications ADD CONSTRAINT refuse_poison "
            f"CHECK (title IS DISTINCT FROM '{POISON_TITLE}')"
        )
    finally:
        await conn.close()
    yield settings
    await delete_queues(settings)
