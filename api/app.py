"""The aiohttp application factory: dependencies in typed ``AppKey``s, routes, middlewares."""

from __future__ import annotations

from aiohttp import web

from api import routes_devices, routes_notifications, routes_ops
from api.auth import KeyAuthenticator
from api.edge import HANDLER_ARGS
from api.keys import AUTH, LIMITER, LINK, SETTINGS, STORE, WRITER
from api.middleware import auth_middleware, edge_middleware
from api.ratelimit import RateLimiter
from api.schemas import MAX_BATCH_BODY_BYTES
from api.writer import BrokerLink, Writer
from notifier.broker import Broker
from notifier.settings import Settings
from notifier.store.base import NotificationStore


def build_app(
    settings: Settings, store: NotificationStore, broker: Broker | None
) -> web.Application:
    """The API application. It does not own ``store``: the caller closes it.

    ``broker`` may be None (down at start): the app reconnects in the background and
    meanwhile accepts notifications unpublished, for the sweeper. The app closes the broker.
    """
    app = web.Application(
        # The largest route's limit; api/body.py holds every other route to its own.
        client_max_size=MAX_BATCH_BODY_BYTES,
        middlewares=[edge_middleware, auth_middleware],
        handler_args=HANDLER_ARGS,
    )
    link = BrokerLink(settings, broker)
    app[SETTINGS] = settings
    app[STORE] = store
    app[LINK] = link
    app[WRITER] = Writer(store, link)
    app[AUTH] = KeyAuthenticator(store)
    app[LIMITER] = RateLimiter(settings.api_rate_per_second, settings.api_rate_burst)
    routes_ops.setup(app)
    routes_notifications.setup(app)
    routes_devices.setup(app)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    app[LINK].start()


async def _stop(app: web.Application) -> None:
    await app[WRITER].close()
    await app[LINK].close()
