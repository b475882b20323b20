"""Broker restarted mid-run: nothing lost. Marked ``disruptive`` (so it runs after every
other test, tests/conftest.py) because it briefly stops the shared RabbitMQ app
(``stop_app``/``start_app``) for everyone."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from notifier.broker import Broker
from notifier.models import Status
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import WorkerPool, wait_final
from tests.workers.processes import publish_to_slow_tokens, stat_reaches, unhealthy

pytestmark = [pytest.mark.slow, pytest.mark.disruptive]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-n", "rabbit@localhost", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_broker_restart_mid_run_loses_nothing(
    workers: WorkerPool,
    store: NotificationStore,
    broker: Broker,
    emulator: Any,
    sized: Callable[[int], int],
) -> None:
    worker = await workers.start(concurrency=32)
    ids = await publish_to_slow_tokens(
        store, broker, emulator, count=sized(400), tokens=20, delay_ms=200
    )
    await wait_for(stat_reaches(worker, "sent", 30), timeout=30, what="some deliveries")
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        await wait_for(lambda: unhealthy(worker), timeout=15, what="/health to report the outage")
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await wait_for(worker.healthy, timeout=60, interval=0.25, what="the worker to reconnect")
    final = await wait_final(store, ids, timeout=60)
    assert {n.status for n in final.values()} == {Status.SENT}
    everything = await emulator.control.deliveries()
    # Each pushed, and once: no worker died (docs/design.md 7, invariant 2). Messages whose ack
    # the restart lost come back, and their claims find the documents final or still held.
    assert {everything[nid][0] for nid in ids} == {1}
