"""Broker restarted mid-run: nothing lost. Runs last in this package (file name) because it
briefly stops the shared RabbitMQ app (``stop_app``/``start_app``) for everyone."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from notifier.broker import Broker
from notifier.models import Platform, Status
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import (
    WorkerPool,
    fcm_token,
    insert_and_publish,
    make_notification,
    wait_final,
)

pytestmark = pytest.mark.slow


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-n", "rabbit@localhost", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def test_broker_restart_mid_run_loses_nothing(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    worker = await workers.start(concurrency=32)
    tokens = [fcm_token() for _ in range(20)]
    for token in tokens:
        await emulator.control.slow(token, 200)
    notes = [make_notification(Platform.FCM, tokens[i % 20]) for i in range(400)]
    ids = await insert_and_publish(store, broker, notes)
    await wait_for(lambda: _sent(worker, 30), timeout=30, what="some deliveries")
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        await wait_for(lambda: _unhealthy(worker), timeout=15, what="/health to report the outage")
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
    await wait_for(worker.healthy, timeout=60, interval=0.25, what="the worker to reconnect")
    final = await wait_final(store, ids, timeout=60)
    assert {n.status for n in final.values()} == {Status.SENT}
    everything = await emulator.control.deliveries()
    counts = [everything[nid][0] for nid in ids]
    assert min(counts) == 1  # every one pushed
    unknown = sum(any(h.outcome == "unknown" for h in n.history) for n in final.values())
    assert sum(c - 1 for c in counts) <= unknown  # a re-push only after an unknown outcome


async def _sent(worker: Any, n: int) -> bool:
    return bool((await worker.stats())["sent"] >= n)


async def _unhealthy(worker: Any) -> bool:
    return (await worker.get("/health")).status_code == 503
