"""``notifier api``: run the API process until SIGTERM/SIGINT, then stop gracefully.

Graceful stop: the listening socket closes first, requests in flight finish (up to
``SHUTDOWN_TIMEOUT_SECONDS``), queued writes are flushed, then the broker and the store close.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from api.app import build_app
from api.edge import EdgeAppRunner
from notifier import eventloop
from notifier.broker import Broker, BrokerUnavailable
from notifier.logging import configure_logging, get_logger
from notifier.settings import Settings
from notifier.store import open_store

log = get_logger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 15.0
BACKLOG = 1024


async def run(settings: Settings, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or a SIGTERM/SIGINT arrives)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await open_store(settings)
    try:
        try:
            broker: Broker | None = await Broker.connect(settings)
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable_at_start", error=str(exc))
            broker = None
        app = build_app(settings, store, broker)
        runner = EdgeAppRunner(
            app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, handle_signals=False
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True)
            await site.start()
            log.info("api_listening", host=host, port=port, store=settings.store_kind)
            await stop.wait()
            log.info("api_stopping")
        finally:
            await runner.cleanup()
    finally:
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("api_stopped")


def serve(settings: Settings, host: str, port: int) -> None:
    """Blocking entry point of ``notifier api``."""
    configure_logging(settings.log_format, settings.log_level)
    # eventloop.run settles the collector: a batch request allocates thousands of
    # short-lived objects, and the default threshold ran a collection every few items
    eventloop.run(run(settings, host, port))
