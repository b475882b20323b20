"""API keys: a key is shown once at creation; only its SHA-256 hash is stored.

``notifier apikey create --app NAME`` calls :func:`create_key`; the API hashes the bearer
key of each request the same way (:func:`hash_key`) and looks the hash up in the store.
"""

from __future__ import annotations

import hashlib
import secrets

from notifier.models import utcnow
from notifier.settings import Settings

KEY_PREFIX = "nk_"


def hash_key(key: str) -> str:
    """The stored form of an API key: hex SHA-256 (keys are 256-bit random, so no salt)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


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
