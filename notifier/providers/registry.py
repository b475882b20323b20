"""Which provider client pushes a notification: its app's own credential, else the default.

One :class:`ProviderRegistry` per worker. A notification's (app, platform) maps to a
:class:`CredentialClient`: the client of the app's stored credential (docs/credentials.md)
or the environment's default client. The map is an LRU bounded by
``NOTIFIER_CREDENTIAL_CLIENTS``; a hit is one dict lookup. Each app client has its own
HTTP/2 connections and its own OAuth2 token or APNs JWT cache (the clients own theirs).

Changes come from :class:`~notifier.credentials.vault.CredentialWatch`, polled every
``POLL_SECONDS`` (5 s): a changed app's clients are dropped from the map, so its next push
loads the new credential; a dropped (or evicted) client is closed once its in-flight
pushes end. A change thus serves new pushes within 5 s plus a poll's round trip. A change,
and a credential healing, also release the notifications it held (:meth:`_release`): they
are made due now, and the sweeper republishes them within its next round.

Isolation and health: an app client takes at most ``NOTIFIER_CREDENTIAL_CONCURRENCY``
pushes at once, the environment's default client (shared by every app without its own)
``NOTIFIER_DEFAULT_CREDENTIAL_CONCURRENCY``; one more is answered
:data:`~notifier.providers.health.BUSY` at once, without waiting on a slot. Each
client's :class:`~notifier.providers.health.CredentialHealth` holds pushes while the
provider refuses the credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from notifier.credentials.model import ApnsCredential, Credential, FcmCredential
from notifier.credentials.model import Provider as CredentialProvider
from notifier.credentials.sealing import Keyring, SealingError
from notifier.credentials.vault import POLL_SECONDS, CredentialWatch, load_credentials
from notifier.logging import get_logger
from notifier.metrics import CREDENTIAL_HEALTHY, CREDENTIAL_LAST_SUCCESS
from notifier.models import Notification, Platform, utcnow
from notifier.providers.apns import ApnsProvider, ProviderToken
from notifier.providers.base import Provider, PushOutcome, PushResult
from notifier.providers.fcm import FcmProvider
from notifier.providers.health import BUSY, DEFAULT_APP, HELD, HOLD_CODES, CredentialHealth
from notifier.providers.http2 import TransportConfig
from notifier.providers.oauth import ServiceAccount
from notifier.settings import Settings
from notifier.store.base import CredentialHealthRecord, NotificationStore, StoreUnavailable

__all__ = ["DEFAULT_APP", "CredentialClient", "ProviderRegistry"]

log = get_logger(__name__)


class CredentialClient:
    """One credential's provider client, its health, its push bound and its lifetime."""

    __slots__ = ("app", "health", "inflight", "limit", "provider", "retired", "shared")

    def __init__(self, app: str, provider: Provider, *, limit: int, probe_seconds: float) -> None:
        self.app = app
        self.provider = provider
        self.limit = limit
        self.health = CredentialHealth(app, provider.platform.value, probe_seconds)
        self.inflight = 0
        self.retired = False  # replaced or evicted: close once ``inflight`` reaches 0
        self.shared = app == DEFAULT_APP  # the default serves many apps: never evicted


# a (app, platform) not in the map yet (None in it: no client for that platform at all)
_UNLOADED = CredentialClient.__new__(CredentialClient)


def _no_provider(platform: Platform) -> PushResult:
    return PushResult(
        PushOutcome.PERMANENT,
        code="provider_not_configured",
        message=f"no {platform.value} provider is configured in this worker",
    )


class ProviderRegistry:
    """The worker's provider clients by (app, platform). Use as ``async with``: it owns
    every client (the defaults too) and closes them on exit."""

    def __init__(
        self,
        settings: Settings,
        defaults: Mapping[Platform, Provider],
        *,
        store: NotificationStore | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keyring = keyring  # None: the environment's credentials only
        self._transport = TransportConfig(
            timeout_seconds=settings.provider_timeout_seconds,
            ca_file=settings.provider_ca_file,
            streams_per_connection=settings.provider_streams_per_connection,
            max_connections=settings.provider_connections,
        )
        probe = settings.credential_probe_seconds
        self._defaults = {
            platform: CredentialClient(
                DEFAULT_APP, p, limit=settings.default_credential_concurrency, probe_seconds=probe
            )
            for platform, p in defaults.items()
        }
        self._clients: OrderedDict[tuple[str, Platform], CredentialClient | None] = OrderedDict()
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._generation: dict[str, int] = {}  # bumped per change: a load in flight is stale
        self._closing: set[asyncio.Task[None]] = set()
        self._watch_task: asyncio.Task[None] | None = None

    @classmethod
    def fixed(cls, settings: Settings, providers: Mapping[Platform, Provider]) -> ProviderRegistry:
        """The environment's clients only (tests, and workers without a secrets key)."""
        return cls(settings, providers)

    async def __aenter__(self) -> ProviderRegistry:
        if self._keyring is not None:
            assert self._store is not None, "app credentials are read from the store"
            watch = CredentialWatch(self._store)
            try:  # the first poll lists every stored credential: nothing loaded to drop yet
                await watch.poll()
            except StoreUnavailable as exc:  # then the loop's first poll is the baseline
                log.warning("credential_watch_failed", error=type(exc).__name__)
            self._watch_task = asyncio.create_task(self._watch(watch), name="credential-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the hot path ------------------------------------------------------------------------

    async def send(self, notification: Notification) -> PushResult:
        """Push with the notification's app credential (or the default)."""
        platform = notification.target.platform
        if self._keyring is None:  # the environment's credentials only, as before issue 16
            client = self._defaults.get(platform)
        else:
            key = (notification.app, platform)
            client = self._clients.get(key, _UNLOADED)
            if client is _UNLOADED:
                loaded = await self._client_for(key)
                if isinstance(loaded, PushResult):
                    return loaded
                client = loaded
            else:
                self._clients.move_to_end(key)
        if client is None:
            return _no_provider(platform)
        return await self._send_with(client, notification)

    async def _send_with(self, client: CredentialClient, n: Notification) -> PushResult:
        if not client.health.admit():
            return PushResult(
                PushOutcome.RETRY,
                code=HELD,
                message="the credential is unhealthy; held until it heals",
                retry_after_seconds=self._settings.credential_probe_seconds,
            )
        limit = client.limit
        if client.inflight >= limit:
            return PushResult(
                PushOutcome.RETRY,
                code=BUSY,
                message=f"the credential has {limit} pushes in flight in this worker",
            )
        client.inflight += 1
        try:
            result = await client.provider.send(n)
        finally:
            client.inflight -= 1
            if client.retired and client.inflight == 0:
                self._close_later(client)
        was_healthy = client.health.healthy
        report = client.health.record(result)
        if report is not None:  # rare: a change of state (or the first answer)
            self._report(client, report, result.code)
            if report and not was_healthy:  # healed: what it held may go now
                self._release_later(client.app, client.provider.platform)
        return result

    # -- loading -----------------------------------------------------------------------------

    async def _client_for(self, key: tuple[str, Platform]) -> CredentialClient | PushResult | None:
        """Load the app's credentials once (concurrent misses share the load)."""
        app = key[0]
        for _ in range(3):  # a change during the load makes it stale: load again
            pending = self._loading.get(app)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[app] = pending
                try:
                    await self._load(app)
                except (StoreUnavailable, SealingError) as exc:
                    pending.set_result(None)
                    return self._unavailable(app, key[1], exc)
                finally:
                    if not pending.done():
                        pending.set_result(None)
                    del self._loading[app]
            else:
                await asyncio.shield(pending)
            if key in self._clients:
                return self._clients[key]
        return self._unavailable(app, key[1], None)

    def _unavailable(self, app: str, platform: Platform, exc: Exception | None) -> PushResult:
        reason = type(exc).__name__ if exc is not None else "changing"
        log.warning("credential_unavailable", app=app, provider=platform.value, reason=reason)
        return PushResult(
            PushOutcome.RETRY,
            code="credential_unavailable",
            message=f"the app's {platform.value} credential could not be loaded ({reason})",
        )

    async def _load(self, app: str) -> None:
        assert self._store is not None and self._keyring is not None
        generation = self._generation.get(app, 0)
        credentials = await load_credentials(self._store, self._keyring, app)
        if self._generation.get(app, 0) != generation:
            return  # changed meanwhile: the caller loads again
        for platform in Platform:
            credential = credentials.get(CredentialProvider(platform.value))
            if credential is None:
                with contextlib.suppress(KeyError):  # deleted: its series goes too
                    CREDENTIAL_HEALTHY.remove(app, platform.value)
                    CREDENTIAL_LAST_SUCCESS.remove(app, platform.value)
                self._put((app, platform), self._defaults.get(platform))
            else:
                self._put((app, platform), self._build(app, credential))

    def _build(self, app: str, credential: Credential) -> CredentialClient:
        settings = self._settings
        provider: Provider
        if isinstance(credential, FcmCredential):
            account = ServiceAccount.from_info(credential.info, f"app {app!r} service account")
            provider = FcmProvider(
                account, endpoint=settings.fcm_endpoint, transport=self._transport
            )
        else:
            assert isinstance(credential, ApnsCredential)
            token = ProviderToken(
                credential.private_key_pem.encode(),
                key_id=credential.key_id,
                team_id=credential.team_id,
            )
            provider = ApnsProvider(
                token,
                topic=credential.topics[0],
                endpoint=settings.apns_endpoint,
                transport=self._transport,
            )
        log.info("credential_client_built", app=app, provider=provider.platform.value)
        return CredentialClient(
            app,
            provider,
            limit=settings.credential_concurrency,
            probe_seconds=settings.credential_probe_seconds,
        )

    def _put(self, key: tuple[str, Platform], client: CredentialClient | None) -> None:
        old = self._clients.pop(key, None)
        if old is not None:
            self._retire(old)
        self._clients[key] = client
        while len(self._clients) > self._settings.credential_clients:
            _, evicted = self._clients.popitem(last=False)
            if evicted is not None:
                self._retire(evicted)

    # -- changes and lifetimes ---------------------------------------------------------------

    async def _watch(self, watch: CredentialWatch) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                changes = await watch.poll()
                for change in changes:
                    self.forget(change.app)
                for change in changes:  # after every forget: a failed release skips none
                    await self._release_logged(change.app, Platform(change.provider.value))
            except StoreUnavailable as exc:
                log.warning("credential_watch_failed", error=type(exc).__name__)
            except Exception:  # a store hiccup must not end the watch: log, poll again
                log.exception("credential_watch_failed")

    def forget(self, app: str) -> None:
        """Drop the app's clients: its next push loads its credentials anew. In-flight
        pushes finish on the old clients, closed once the last one ends."""
        self._generation[app] = self._generation.get(app, 0) + 1
        for platform in Platform:
            client = self._clients.pop((app, platform), None)
            if client is not None:
                self._retire(client)

    async def _release(self, app: str, platform: Platform) -> None:
        """Make the notifications held for ``app``'s ``platform`` credential due now, so the
        sweeper republishes them within a round instead of at their grown backoff (up to
        ``NOTIFIER_RETRY_MAX_SECONDS``). The default credential serves every app without its
        own: all held notifications of the platform are released (those of an app whose own
        credential still fails are held again at once, without a request: an extra early
        retry, cheaper than reading which apps have their own). Every worker that sees the
        change or heal releases too: a later release finds them due already."""
        if self._store is None:
            return
        released = await self._store.release_held(
            None if app == DEFAULT_APP else app, platform, utcnow(), codes=HOLD_CODES
        )
        if released:
            log.info("held_released", app=app, provider=platform.value, count=released)

    def _release_later(self, app: str, platform: Platform) -> None:
        task = asyncio.get_running_loop().create_task(self._release_logged(app, platform))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _release_logged(self, app: str, platform: Platform) -> None:
        try:
            await self._release(app, platform)
        except Exception:  # they still go out at their backoff: log, do not stop the caller
            log.exception("held_release_failed", app=app)

    def _retire(self, client: CredentialClient) -> None:
        if client.shared or client.retired:
            return
        client.retired = True
        if client.inflight == 0:
            self._close_later(client)

    def _close_later(self, client: CredentialClient) -> None:
        task = asyncio.get_running_loop().create_task(client.provider.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _report(self, client: CredentialClient, healthy: bool, code: str | None) -> None:
        """Write the credential's new state to the store, for the API's health route."""
        provider = client.provider.platform.value
        log.log(
            logging.INFO if healthy else logging.WARNING,
            "credential_health_changed",
            app=client.app,
            provider=provider,
            healthy=healthy,
            code=None if healthy else code,
        )
        if self._store is None:
            return
        record = CredentialHealthRecord(
            client.app, provider, healthy, utcnow(), None if healthy else code
        )
        task = asyncio.get_running_loop().create_task(self._write_health(record))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _write_health(self, record: CredentialHealthRecord) -> None:
        try:
            await self._store.put_credential_health(record)  # type: ignore[union-attr]
        except Exception:  # the next change writes again; the metric is the live view
            log.exception("credential_health_write_failed", app=record.app)

    def inflight(self, app: str, platform: Platform) -> int:
        """Pushes in flight on the client that serves ``app`` now (0 when none is loaded)."""
        client = self._clients.get((app, platform))
        return 0 if client is None else client.inflight

    def health(self) -> list[dict[str, Any]]:
        """Every client's health in this worker (``/stats``)."""
        clients = {id(c): c for c in (*self._defaults.values(), *self._clients.values()) if c}
        return [
            {
                "app": c.app,
                "provider": c.provider.platform.value,
                "healthy": c.health.healthy,
                "in_flight": c.inflight,
            }
            for c in clients.values()
        ]

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        clients = {id(c): c for c in (*self._defaults.values(), *self._clients.values()) if c}
        self._clients.clear()
        for client in clients.values():
            await client.provider.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
