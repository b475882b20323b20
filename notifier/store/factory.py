"""Pick the store implementation from the scheme of ``NOTIFIER_STORE_URL``."""

from __future__ import annotations

from notifier.settings import Settings
from notifier.store.base import NotificationStore


async def open_store(settings: Settings, *, setup: bool = True) -> NotificationStore:
    """Connect to the configured store and (by default) create its schema idempotently."""
    store: NotificationStore
    if settings.store_kind == "postgresql":
        from notifier.store.postgres import PostgresStore

        store = await PostgresStore.connect(settings.store_url)
    else:
        from notifier.store.mongo import MongoStore

        store = await MongoStore.connect(settings.store_url)
    if setup:
        await store.setup()
    return store
