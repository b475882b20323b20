"""API keys: a key is shown once at creation; only its SHA-256 hash is stored.

``notifier apikey create --app NAME`` calls :func:`create_key`; the API hashes the bearer
key of each request the same way (:func:`hash_key`) and looks the hash up in the store.
A key is named by its id, the first 16 hex characters of that hash (:func:`key_id`):
``notifier apikey list`` shows ids, ``notifier apikey revoke ID`` deletes the key.
"""

from __future__ import annotations

import hashlib
import secrets

from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store.base import API_KEY_ID_CHARS, ApiKeyInfo

KEY_PREFIX = "nk_"
# How long each API replica may keep answering for a key after it was revoked (it caches
# known keys that long: api/auth.py). docs/api.md promises at most this; 5 s at most.
REVOCATION_SECONDS = 3.0


def hash_key(key: str) -> str:
    """The stored form of an API key: hex SHA-256 (keys are 256-bit random, so no salt)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str:
    """The id that names ``key`` in ``notifier apikey list|revoke``; reveals nothing of it."""
    return hash_key(key)[:API_KEY_ID_CHARS]


def generate_key() -> str:
    """A new random API key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(settings: Settings, app: str) -> str:
    """Create a key for ``app``: store its hash, return the key itself (shown once)."""
    if not app or len(app) > 200 or not app.isprintable():
        raise ValueError("the app name must be 1..200 printable characters")
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        key = generate_key()
        await store.add_api_key(app, hash_key(key), utcnow())
        return key
    finally:
        await store.close()


async def list_keys(settings: Settings, app: str | None = None) -> list[ApiKeyInfo]:
    """Every key of the store (or ``app``'s), oldest first: ids, never keys."""
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        return await store.list_api_keys(app)
    finally:
        await store.close()


async def revoke_key(settings: Settings, key_id: str) -> str | None:
    """Delete the key with this id; the app it belonged to, or None if there is none."""
    from notifier.store import open_store

    store = await open_store(settings)
    try:
        return await store.revoke_api_key(key_id.strip().lower())
    finally:
        await store.close()
