"""Typed application keys: the dependencies a handler finds on ``request.app``."""

from __future__ import annotations

from aiohttp import web

from api.auth import AdminKeys, KeyAuthenticator
from api.ratelimit import RateLimiter
from api.writer import BrokerLink, Writer
from notifier.credentials.sealing import Keyring
from notifier.settings import Settings
from notifier.store.base import NotificationStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", NotificationStore)
LINK = web.AppKey("broker_link", BrokerLink)
WRITER = web.AppKey("writer", Writer)
AUTH = web.AppKey("auth", KeyAuthenticator)
LIMITER = web.AppKey("limiter", RateLimiter)
ADMIN_KEYS = web.AppKey("admin_keys", AdminKeys)
# Present only when NOTIFIER_SECRETS_KEY is set: storing a credential needs it.
KEYRING = web.AppKey("keyring", Keyring)

# Per-request: the app that the bearer key belongs to.
APP_NAME = web.RequestKey("app_name", str)
