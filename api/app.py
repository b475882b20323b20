"""The aiohttp application factory: dependencies in typed ``AppKey``s, routes, middlewares."""

from __future__ import annotations

from aiohttp import web

from api import (
    routes_admin,
    routes_apps,
    routes_devices,
    routes_notifications,
    routes_ops,
    routes_options,
)
from api.auth import AdminKeys, KeyAuthenticator
from api.edge import HANDLER_ARGS
from api.keys import ADMIN_KEYS, AUTH, KEYRING, LIMITER, LINK, SETTINGS, STORE, WRITER
from api.middleware import auth_middleware, edge_middleware
from api.ratelimit import RateLimiter
from api.schemas import MAX_BATCH_BODY_BYTES
from api.writer import BrokerLink, Writer
from notifier.broker import Broker
from notifier.credentials.vault import keyring_from
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
    app[ADMIN_KEYS] = AdminKeys(store)
    if settings.secrets_key is not None:
        app[KEYRING] = keyring_from(settings)
    routes_ops.setup(app)
    routes_notifications.setup(app)
    routes_devices.setup(app)
    routes_apps.setup(app)
    routes_admin.setup(app)
    routes_options.setup(app)  # last: it answers for every route above
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    app[LINK].start()


async def _stop(app: web.Application) -> None:
    await app[WRITER].close()
    await app[LINK].close()
