"""Typed application keys: the dependencies a handler finds on ``request.app``."""

from __future__ import annotations

from aiohttp import web

from api.auth import KeyAuthenticator
from api.ratelimit import RateLimiter
from api.writer import BrokerLink, Writer
from notifier.settings import Settings
from notifier.store.base import NotificationStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", NotificationStore)
LINK = web.AppKey("broker_link", BrokerLink)
WRITER = web.AppKey("writer", Writer)
AUTH = web.AppKey("auth", KeyAuthenticator)
LIMITER = web.AppKey("limiter", RateLimiter)

# Per-request: the app that the bearer key belongs to.
APP_NAME = web.RequestKey("app_name", str)
