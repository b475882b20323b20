"""Operational routes: ``/health``, ``/ready``, ``/metrics``, ``/openapi.json``."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from api import responses as shape
from api.keys import LINK, STORE
from api.openapi import openapi_document
from api.problems import Problem
from notifier.broker import BrokerUnavailable
from notifier.metrics import API_REGISTRY, CONTENT_TYPE, render
from notifier.store.base import StoreUnavailable
from notifier.web import json_response

READY_TIMEOUT_SECONDS = 2.0


async def health(request: web.Request) -> web.Response:
    body: shape.Health = {"status": "ok"}
    return json_response(body)


async def ready(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), READY_TIMEOUT_SECONDS)
    except (StoreUnavailable, TimeoutError):
        checks["store"] = "unavailable"
    try:
        await request.app[LINK].ping()
    except BrokerUnavailable:
        checks["broker"] = "unavailable"
    down = [name for name, state in checks.items() if state != "ok"]
    if down:
        raise Problem(
            503, f"not ready: {', '.join(down)} unavailable", headers={"Retry-After": "1"}
        )
    body: shape.Ready = {"status": "ready", "checks": {"store": "ok", "broker": "ok"}}
    return json_response(body)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=render(API_REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_get("/ready", ready, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    cached: list[bytes] = []

    async def openapi(request: web.Request) -> web.Response:
        if not cached:  # built on first use: by then every route is registered
            cached.append(orjson.dumps(openapi_document(request.app)))
        return web.Response(body=cached[0], content_type="application/json")

    app.router.add_get("/openapi.json", openapi, allow_head=False)
