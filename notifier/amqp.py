"""Connections to RabbitMQ: one node, or the nodes of a cluster (``NOTIFIER_AMQP_URL``
holding several URLs, comma-separated; docs/design.md section 5).

aio-pika's robust connection reconnects to the one URL it was given; a client of a
cluster must move to another node when its own dies. :class:`FailoverConnection` keeps
the node list and, on every connection attempt (the first and each reconnect), tries the
nodes in turn, starting after the one it last used, until one lets it in; the robust
machinery then restores its channels, queues and consumers there as after any reconnect.
Nothing is lost in the move: a publish unconfirmed when the node died raises (its caller
retries it or leaves it to the sweeper), and the messages a consumer held unacked go back
to their queue, whose quorum replicas on the surviving nodes elect a new leader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from notifier.logging import get_logger
from notifier.settings import Settings, redacted_url

log = get_logger(__name__)

# Between reconnection rounds (each round tries every node once). aio-pika's default is
# 5 s; a lost node is a failover, not an outage, so the next round comes sooner.
RECONNECT_INTERVAL_SECONDS = 1.0


class FailoverConnection(RobustConnection):
    """A robust connection to the first node of ``urls`` that answers, moving to the next
    live one whenever its node is lost."""

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no AMQP URL")
        self._urls = [URL(url) for url in urls]
        self._next = 0  # the node the next attempt tries first
        super().__init__(self._urls[0], **kwargs)

    @property
    def node(self) -> str:
        """The node in use (or last tried), without its password."""
        return redacted_url(str(self.url))

    # aio-pika's RobustConnection runs every attempt, the first and each reconnect, through
    # this private method (its name mangled); overriding it is the one place where the
    # URL can change between attempts. tests/notifier/test_amqp.py holds the behaviour.
    async def _RobustConnection__connect_transport(self) -> None:
        error: BaseException | None = None
        for step in range(len(self._urls)):
            index = (self._next + step) % len(self._urls)
            self.url = self._urls[index]
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
                if len(self._urls) > 1:
                    log.warning("amqp_node_unavailable", node=self.node, error=type(exc).__name__)
                continue
            # Next time (this node lost) start with the one after it: the lost one is tried
            # last, so a reconnect does not first wait on a node that just died.
            self._next = (index + 1) % len(self._urls)
            if len(self._urls) > 1:
                log.info("amqp_node_connected", node=self.node)
            return
        assert error is not None
        raise error


async def connect_robust(settings: Settings, *, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust connection to the first live node of ``NOTIFIER_AMQP_URL`` (reconnecting to
    a live one, this or another, whenever it is lost). ``timeout``: per node and attempt."""
    connection = FailoverConnection(
        settings.amqp_urls, reconnect_interval=RECONNECT_INTERVAL_SECONDS
    )
    try:
        await connection.connect(timeout=timeout)
    except BaseException:
        await connection.close()
        raise
    return connection


async def connect_once(settings: Settings, *, timeout: float = 10.0) -> AbstractConnection:
    """A plain (not robust) connection to the first node that answers: for short jobs."""
    error: BaseException | None = None
    for url in settings.amqp_urls:
        try:
            return await aio_pika.connect(url, timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            error = exc
    assert error is not None
    raise error
