"""Helpers shared by the worker-process tests: in-flight workloads and /stats probes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from notifier.broker import Broker
from notifier.models import Platform
from notifier.store.base import NotificationStore
from tests.workers.conftest import WorkerProc, fcm_token, insert_and_publish, make_notification


async def publish_to_slow_tokens(
    store: NotificationStore,
    broker: Broker,
    emulator: Any,
    *,
    count: int,
    tokens: int,
    delay_ms: int,
) -> list[str]:
    """Insert and publish ``count`` FCM notifications spread over ``tokens`` fresh device
    tokens that the emulator answers only after ``delay_ms``: deliveries stay in flight."""
    slow = [fcm_token() for _ in range(tokens)]
    for token in slow:
        await emulator.control.slow(token, delay_ms)
    notes = [make_notification(Platform.FCM, slow[i % tokens]) for i in range(count)]
    return await insert_and_publish(store, broker, notes)


def stat_reaches(proc: WorkerProc, name: str, n: int) -> Callable[[], Awaitable[bool]]:
    """A ``wait_for`` predicate: the worker's ``/stats`` counter ``name`` is at least ``n``."""

    async def check() -> bool:
        return bool((await proc.stats())[name] >= n)

    return check


async def metric_total(proc: WorkerProc, sample: str) -> float:
    """The sum of a worker's ``/metrics`` sample ``sample`` over all its label sets."""
    text = (await proc.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + "{")
    )


async def unhealthy(proc: WorkerProc) -> bool:
    """A ``wait_for`` predicate: the worker's ``/health`` answers 503."""
    return (await proc.get("/health")).status_code == 503
