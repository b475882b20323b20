"""Connections over several broker nodes (NOTIFIER_AMQP_URL with comma-separated URLs).

Two "nodes" here are two TCP proxies in front of the one real RabbitMQ: closing a proxy
and the connections through it is, to a client, its node lost. (The real thing, a cluster
node SIGKILLed under load: tests/e2e/test_broker_failover.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from notifier.amqp import FailoverConnection, connect_once, connect_robust
from notifier.broker import Broker, existing_queue
from notifier.settings import Settings, SettingsError, load_settings
from notifier_tools.procs import free_port
from tests.conftest import AMQP_URL
from tests.support import wait_for


class Node:
    """A TCP proxy to the real broker on a port of its own; ``lose()`` drops it and every
    connection through it, as a node's death does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        parts = urlsplit(AMQP_URL)
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = urlsplit(AMQP_URL)
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 5672)
        self.pipes.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def lose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in self.pipes:
            writer.transport.abort()
        self.pipes.clear()


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    proxies = [Node(), Node()]
    for node in proxies:
        await node.start()
    yield proxies
    for node in proxies:
        await node.lose()


def test_several_urls_are_read_in_order() -> None:
    s = load_settings(
        {"NOTIFIER_AMQP_URL": " amqp://u:p@10.0.0.1:5672/v , amqp://u:p@10.0.0.2/v,,"}
    )
    assert s.amqp_urls == ("amqp://u:p@10.0.0.1:5672/v", "amqp://u:p@10.0.0.2/v")
    assert load_settings({}).amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/",)


@pytest.mark.parametrize(
    "value",
    [
        "amqp://u:s3cr3t-pw@10.0.0.1/,http://u:s3cr3t-pw@10.0.0.2/",
        "amqp://u:s3cr3t-pw@10.0.0.1/,amqp://u:s3cr3t-pw@:5672/",
        "amqp://u:s3cr3t-pw@10.0.0.1/,amqp://u:s3cr3t-pw@10.0.0.2:99999/",
        " , ",
    ],
)
def test_a_bad_url_in_the_list_names_the_variable_not_the_password(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"NOTIFIER_AMQP_URL": value})
    message = str(caught.value)
    assert message.startswith("NOTIFIER_AMQP_URL: ") and "\n" not in message
    assert "s3cr3t-pw" not in message


async def test_connects_to_the_first_node_that_answers(
    make_settings: Callable[..., Settings], nodes: list[Node]
) -> None:
    await nodes[0].lose()
    settings = make_settings(amqp_url=f"{nodes[0].url},{nodes[1].url}")
    connection = await connect_robust(settings, timeout=5)
    try:
        assert isinstance(connection, FailoverConnection)
        assert connection.url.port == nodes[1].port
    finally:
        await connection.close()
    plain = await connect_once(settings, timeout=5)
    await plain.close()


async def test_none_answering_fails_at_once(make_settings: Callable[..., Settings]) -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
        await connect_robust(make_settings(amqp_url=",".join(dead)), timeout=2)


async def test_a_lost_node_moves_publisher_and_consumer_to_a_live_one(
    make_settings: Callable[..., Settings], nodes: list[Node]
) -> None:
    """Fails with one URL (aio-pika's connect_robust): the client knocks on the lost node
    for ever, its publishes fail and its consumer never comes back."""
    settings = make_settings(amqp_url=f"{nodes[0].url},{nodes[1].url}")
    broker = await Broker.connect(settings, timeout=5)
    received: list[bytes] = []
    try:
        assert broker.connection.url.port == nodes[0].port  # type: ignore[attr-defined]
        channel = await broker.connection.channel()
        queue = await channel.declare_queue(settings.queue, passive=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message.body)
            await message.ack()

        await queue.consume(on_message)
        await nodes[0].lose()
        # the API's way: retried until the connection is back on the other node
        for attempt in range(100):
            try:
                await broker.publish(["after-the-loss"])
                break
            except Exception:
                await asyncio.sleep(0.1 * min(attempt + 1, 5))
        assert broker.connection.url.port == nodes[1].port  # type: ignore[attr-defined]
        await wait_for(lambda: received, timeout=20, what="the restored consumer to receive")
        assert b"after-the-loss" in received[0]
    finally:
        with contextlib.suppress(Exception):
            async with existing_queue(broker.connection, settings.queue) as q:
                await q.purge()
        await broker.close()
