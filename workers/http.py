"""The worker's HTTP side-port: ``/metrics`` (Prometheus), ``/health`` and ``/stats`` (JSON)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from notifier import metrics
from notifier.broker import Broker
from notifier.delivery import Deliverer
from notifier.store.base import NotificationStore
from notifier.sweeper import Sweeper
from notifier.web import json_response
from workers.consumer import Consumer

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class WorkerState:
    """Everything the side-port reports on; owned by :mod:`workers.main`."""

    worker_id: str
    store: NotificationStore
    broker: Broker
    deliverer: Deliverer
    consumer: Consumer
    sweeper: Sweeper
    started_monotonic: float = field(default_factory=time.monotonic)


STATE_KEY = web.AppKey("state", WorkerState)


async def _metrics(request: web.Request) -> web.Response:
    body = metrics.render(metrics.WORKER_REGISTRY)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def _check(probe: Any) -> bool:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except Exception:  # any failure or timeout means "not reachable" for a health check
        return False
    return True


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    consumer_alive = state.consumer.alive
    broker_ok = await _check(state.broker.ping())
    store_ok = await _check(state.store.ping())
    healthy = consumer_alive and broker_ok and store_ok
    body = {
        "status": "ok" if healthy else "unhealthy",
        "worker_id": state.worker_id,
        "consumer": consumer_alive,
        "broker": broker_ok,
        "store": store_ok,
    }
    return json_response(body, 200 if healthy else 503)


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    stats = state.deliverer.stats
    sweeper = state.sweeper
    # at most one count per second however often /stats is polled; a timeout keeps the last
    await _check(sweeper.refresh_gauges(max_age_seconds=1.0))
    body = {
        "worker_id": state.worker_id,
        "uptime_seconds": round(time.monotonic() - state.started_monotonic, 3),
        "processed": stats.processed,
        "sent": stats.sent,
        "retried": stats.retried,
        "failed": stats.failed,
        "expired": stats.expired,
        "duplicates_suppressed": stats.duplicates_suppressed,
        "lock_lost": stats.lock_lost,
        "slots_in_use": state.consumer.slots_in_use,
        "lanes": state.consumer.lane_stats(),
        "consumer_alive": state.consumer.alive,
        "by_status": sweeper.by_status,
        "queue_depths": sweeper.queue_depths,
        # each provider client's credential: app ("(environment)": the default), health
        "credentials": state.deliverer.providers.health(),
    }
    return json_response(body)


def build_app(state: WorkerState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    return app


async def start_http(state: WorkerState, host: str, port: int) -> web.AppRunner:
    """Serve the side-port; the caller owns the runner and calls ``cleanup()`` at exit."""
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
