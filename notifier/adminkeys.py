"""Admin keys: bearer keys for the admin API (``/v1/admin/...``), apart from apps' keys.

An admin key manages any app's provider credentials and cannot send notifications; an
app's key cannot reach an admin route (both are 403). Like API keys, a key is shown once
at creation and only its SHA-256 hash is stored, in its own table/collection, so no
``apikey`` command can list or revoke one by mistake. ``notifier adminkey create|list|revoke``.
"""

from __future__ import annotations

import secrets

from notifier.apikeys import hash_key, key_id
from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store.base import ApiKeyInfo

ADMIN_KEY_PREFIX = "na_"

__all__ = ["ADMIN_KEY_PREFIX", "create_admin_key", "generate_admin_key", "key_id"]


def generate_admin_key() -> str:
    """A new random admin key (256 bits, URL-safe); its prefix tells it from app keys."""
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


async def create_admin_key(settings: Settings) -> str:
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        key = generate_admin_key()
        await store.add_admin_key(hash_key(key), utcnow())
        return key
    finally:
        await store.close()


async def list_admin_keys(settings: Settings) -> list[ApiKeyInfo]:
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        return await store.list_admin_keys()
    finally:
        await store.close()


async def revoke_admin_key(settings: Settings, id_: str) -> bool:
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        return await store.revoke_admin_key(id_.strip().lower())
    finally:
        await store.close()
