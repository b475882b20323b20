"""Bearer API keys: hash, look up the app, cache positive answers briefly in memory.

The cache is what bounds revocation: ``notifier apikey revoke`` deletes the key from the
store, and each replica keeps answering for it until its cached entry expires, so a
revoked key stops working on every replica within ``CACHE_SECONDS`` (docs/api.md). Unknown
keys are never cached, so a new key works at once.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from notifier.apikeys import REVOCATION_SECONDS, hash_key
from notifier.store.base import NotificationStore

# The revocation bound. At 3 s a key costs each replica one indexed store lookup per 3 s,
# nothing beside the requests it serves.
CACHE_SECONDS = REVOCATION_SECONDS
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    key_hash: str
    app: str
    expires: float


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 512:
        return None
    return key


class KeyAuthenticator:
    """Maps a bearer key to its app; unknown keys are asked of the store every time."""

    def __init__(self, store: NotificationStore, cache_seconds: float = CACHE_SECONDS) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _Entry] = {}

    async def app_for(self, key: str) -> str | None:
        """The app owning ``key``, or None; raises StoreUnavailable if it cannot tell."""
        key_hash = hash_key(key)
        now = time.monotonic()
        entry = self._cache.get(key_hash)
        if (
            entry is not None
            and entry.expires > now
            and hmac.compare_digest(entry.key_hash, key_hash)
        ):
            return entry.app
        app = await self._store.app_for_key_hash(key_hash)
        if app is not None:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key_hash] = _Entry(key_hash, app, now + self._cache_seconds)
        return app


class AdminKeys:
    """Tells admin keys (``notifier adminkey create``) for the admin API, cached like app
    keys: a revoked admin key stops working within ``CACHE_SECONDS``."""

    def __init__(self, store: NotificationStore, cache_seconds: float = CACHE_SECONDS) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[str, float] = {}  # key hash -> expiry

    async def is_admin(self, key: str) -> bool:
        """Whether ``key`` is an admin key; raises StoreUnavailable if it cannot tell."""
        key_hash = hash_key(key)
        now = time.monotonic()
        if self._cache.get(key_hash, 0.0) > now:
            return True
        if not await self._store.is_admin_key_hash(key_hash):
            return False
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[key_hash] = now + self._cache_seconds
        return True
