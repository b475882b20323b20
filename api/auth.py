"""Bearer API keys: hash, look up the app, cache positive answers briefly in memory."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from notifier.apikeys import hash_key
from notifier.store.base import NotificationStore

CACHE_SECONDS = 30.0
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
