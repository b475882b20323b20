"""The worker process: wires store, broker, providers, consumer, sweeper and side-port.

``serve`` blocks until SIGTERM/SIGINT, then shuts down in order: stop consuming, drain the
in-flight deliveries (bounded), write their outcomes, ack, and close every resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from notifier import eventloop, metrics
from notifier.broker import Broker
from notifier.delivery import Deliverer
from notifier.logging import configure_logging, get_logger
from notifier.providers.registry import ProviderRegistry
from notifier.retrying import Backoff, Stopped, retry
from notifier.settings import Settings
from notifier.store.base import NotificationStore
from notifier.store.batching import BatchedStore
from notifier.store.factory import open_store
from notifier.sweeper import QueueHead, Sweeper
from workers.consumer import Consumer
from workers.http import WorkerState, start_http

log = get_logger(__name__)

DRAIN_SECONDS = 25.0
# jittered: workers started together do not all knock in step on a service that came back
CONNECT_BACKOFF = Backoff(first_seconds=0.2, max_seconds=5.0, jitter=0.5)
T = TypeVar("T")


def make_worker_id() -> str:
    """``host-pid-random``: unique per process, readable in attempt history."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def serve(settings: Settings, host: str, metrics_port: int, concurrency: int) -> None:
    """Run a worker until SIGTERM/SIGINT (blocking; owns its event loop)."""
    configure_logging(settings.log_format, settings.log_level)
    eventloop.run(run_worker(settings, host, metrics_port, concurrency))


async def _until_connected(
    what: str, stop: asyncio.Event, connect: Callable[[], Awaitable[T]]
) -> T | None:
    """Call ``connect()`` until it succeeds (services may start after us); None on stop."""
    try:  # unreachable or refused: logged, and tried again
        return await retry(
            connect, what=what, backoff=CONNECT_BACKOFF, stop=stop, event="connect_failed"
        )
    except Stopped:
        return None


def _registry(settings: Settings, store: NotificationStore) -> ProviderRegistry:
    """The environment's clients, plus the apps' own credentials when a secrets key is set
    (without one the worker pushes with the environment's credentials only, as before)."""
    from notifier.credentials.vault import NoSecretsKey, keyring_from
    from notifier.providers.factory import build_providers

    try:
        keyring = keyring_from(settings)
    except NoSecretsKey:
        log.info("app_credentials_off", reason="NOTIFIER_SECRETS_KEY is not set")
        return ProviderRegistry(settings, build_providers(settings), store=store)
    return ProviderRegistry(settings, build_providers(settings), store=store, keyring=keyring)


async def run_worker(settings: Settings, host: str, metrics_port: int, concurrency: int) -> None:
    """The worker's whole life; returns after a clean shutdown on SIGTERM/SIGINT."""
    worker_id = make_worker_id()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker_starting", worker_id=worker_id, concurrency=concurrency)
    async with contextlib.AsyncExitStack() as stack:
        store = await _until_connected("store", stop, lambda: open_store(settings))
        if store is None:
            return
        stack.push_async_callback(store.close)
        log.info("store_connected", kind=store.kind)
        broker = await _until_connected("broker", stop, lambda: Broker.connect(settings))
        if broker is None:
            return
        stack.push_async_callback(broker.close)
        log.info("broker_connected", queue=settings.queue)
        providers = await stack.enter_async_context(_registry(settings, store))
        # claims and outcome writes of concurrent deliveries share store round trips
        batched = await stack.enter_async_context(
            BatchedStore(store, worker_id, settings.lock_seconds)
        )
        deliverer = Deliverer(
            settings=settings, store=batched, providers=providers, dead_letters=broker
        )
        # read at scrape time: an inc() and a dec() per push cost two lock round trips
        metrics.INFLIGHT.set_function(lambda: deliverer.stats.deliveries_in_progress)
        queue_head = QueueHead()  # what the consumer receives tells the sweeper what is lost
        consumer = Consumer(
            settings,
            broker.connection,
            deliverer,
            concurrency=concurrency,
            queue_head=queue_head,
            bulk_apps=store.bulk_apps,
        )
        stack.push_async_callback(consumer.close)
        sweeper = Sweeper(settings, store, broker, queue_head)
        state = WorkerState(worker_id, store, broker, deliverer, consumer, sweeper)
        runner = await start_http(state, host, metrics_port)
        stack.push_async_callback(runner.cleanup)
        await consumer.start()
        sweep_task = asyncio.create_task(sweeper.run(), name="sweeper")
        log.info("worker_ready", worker_id=worker_id, metrics_port=metrics_port)
        await stop.wait()
        log.info("worker_stopping", slots_in_use=consumer.slots_in_use)
        sweep_task.cancel()
        await asyncio.gather(sweep_task, return_exceptions=True)
        drained = await consumer.stop(DRAIN_SECONDS)
        log.info("worker_drained", clean=drained, stats=deliverer.stats.processed)
    log.info("worker_stopped", worker_id=worker_id)
