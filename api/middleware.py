"""Middlewares: errors as problem+json, request metrics by route template, key auth + limit."""

from __future__ import annotations

import math
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from api.auth import bearer_key
from api.keys import ADMIN_KEYS, APP_NAME, AUTH, LIMITER
from api.problems import Problem
from notifier.logging import get_logger
from notifier.metrics import HTTP_DURATION, HTTP_REQUESTS, RATE_LIMITED
from notifier.store.base import StoreUnavailable

log = get_logger(__name__)

_KEEP_HEADERS = ("Allow", "Retry-After")
# Routes under this prefix take admin keys only (api/routes_admin.py).
ADMIN_PREFIX = "/v1/admin/"


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/notifications/{id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class _RequestMetrics:
    """The request counter and histogram children, looked up once per label set."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(route, method, str(status))
            self._counters[(route, method, status)] = counter
        counter.inc()
        duration = self._durations.get((route, method))
        if duration is None:
            duration = self._durations[(route, method)] = HTTP_DURATION.labels(route, method)
        duration.observe(seconds)


_metrics = _RequestMetrics()


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outer layer: every error becomes problem+json; every answer is counted and timed."""
    started = time.perf_counter()
    status = 500
    try:
        response = await _answer_errors(request, handler)
        status = response.status
        return response
    finally:
        route = route_template(request)
        _metrics.observe(route, request.method, status, time.perf_counter() - started)


async def _answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return Problem(exc.status, detail, headers=headers).response()
    except StoreUnavailable as exc:
        log.warning("store_unavailable", path=route_template(request), error=str(exc))
        return Problem(
            503, "the store is unavailable; retry later", headers={"Retry-After": "1"}
        ).response()
    except Exception:
        log.exception("unhandled_error", route=route_template(request), method=request.method)
        return Problem(500, "internal error").response()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/v1`` routes need a known bearer key (OPTIONS aside); each key has its own bucket.
    ``/v1/admin/`` routes need an admin key; the others an app's key (else 403)."""
    if (
        not request.path.startswith("/v1/")
        or request.method == "OPTIONS"
        or request.match_info.http_exception is not None
    ):
        return await handler(request)
    key = bearer_key(request.headers.get("Authorization"))
    unauthorized = {"WWW-Authenticate": 'Bearer realm="notifier"'}
    if key is None:
        raise Problem(401, "missing bearer API key", headers=unauthorized)
    if request.path.startswith(ADMIN_PREFIX):
        await _check_admin_key(request, key, unauthorized)
        return await handler(request)
    app_name = await request.app[AUTH].app_for(key)
    if app_name is None:
        if await request.app[ADMIN_KEYS].is_admin(key):
            raise Problem(
                403,
                "an admin key cannot reach the apps' API: use an app's API key",
                type_="forbidden",
            )
        raise Problem(401, "unknown API key", headers=unauthorized)
    _limit(request, key)
    request[APP_NAME] = app_name
    return await handler(request)


def _limit(request: web.Request, key: str) -> None:
    wait = request.app[LIMITER].acquire(key)
    if wait > 0:
        RATE_LIMITED.inc()
        raise Problem(
            429,
            "rate limit of this API key exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


async def _check_admin_key(request: web.Request, key: str, unauthorized: dict[str, str]) -> None:
    """Admin routes take admin keys only: an app's key is 403, an unknown key 401."""
    if await request.app[ADMIN_KEYS].is_admin(key):
        _limit(request, key)
        return
    if await request.app[AUTH].app_for(key) is not None:
        raise Problem(
            403,
            "an app's API key cannot reach the admin API: use an admin key "
            "(notifier adminkey create)",
            type_="forbidden",
        )
    raise Problem(401, "unknown admin key", headers=unauthorized)
