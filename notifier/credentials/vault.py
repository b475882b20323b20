"""The vault: an app's provider credentials sealed into the store and opened back.

The one entry point for everything that reads or writes credentials: the CLI, the admin
API, and the workers. A worker holds a :class:`CredentialWatch` and calls
:meth:`CredentialWatch.poll` every :data:`POLL_SECONDS`; it answers the (app, provider)
pairs that changed since the last poll (a put, a delete, a rotation), so the worker
rebuilds or drops that provider client; :func:`load_credentials` opens an app's
credentials (decrypted) when a client is first needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from notifier.credentials.model import (
    Credential,
    CredentialError,
    Provider,
    credential_from_material,
)
from notifier.credentials.sealing import Keyring, Sealed, SealingError, parse_key
from notifier.models import utcnow
from notifier.settings import Settings
from notifier.store.base import NotificationStore, StoredCredential

# How often a worker should poll for changed credentials: a change takes effect within
# this plus one poll's round trip (issue 16 asks for at most 10 s).
POLL_SECONDS = 5.0
# Each poll re-reads this far before the previous one: a put whose ``updated_at`` was
# taken on a writer's clock a little behind, or committed after the previous poll read,
# is still seen. Versions tell a re-read from a change.
POLL_OVERLAP_SECONDS = 30.0
MAX_APP_CHARS = 200
APP_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]{1,200}$"
_APP_NAME = re.compile(APP_NAME_PATTERN)
_ROTATE_ATTEMPTS = 5


class NoSecretsKey(Exception):
    """NOTIFIER_SECRETS_KEY is not set, and the command needs it."""

    def __init__(self) -> None:
        super().__init__(
            "NOTIFIER_SECRETS_KEY: is required to store or read app credentials "
            "(docs/credentials.md; `notifier app credentials new-secrets-key` makes one)"
        )


def keyring_from(settings: Settings) -> Keyring:
    """The keyring of NOTIFIER_SECRETS_KEY (and _PREVIOUS); :class:`NoSecretsKey` if unset."""
    if settings.secrets_key is None:
        raise NoSecretsKey()
    previous = settings.secrets_key_previous
    return Keyring(
        parse_key(settings.secrets_key.get_secret_value()),
        None if previous is None else parse_key(previous.get_secret_value()),
    )


def check_app(app: str) -> str:
    """The app name: 1..200 characters, no control character (every name ``apikey create``
    takes); :class:`CredentialError` otherwise. The admin API's path rule is this one."""
    if not isinstance(app, str) or not _APP_NAME.fullmatch(app) or not _utf8(app):
        raise CredentialError("app", f"must be 1..{MAX_APP_CHARS} characters, no control character")
    return app


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store keeps it
        return False
    return True


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A stored credential as ``show`` and the admin API describe it: no material."""

    app: str
    provider: Provider
    version: int
    updated_at: datetime
    secrets_key_id: str
    public: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.public,
            "app": self.app,
            "provider": self.provider.value,
            "version": self.version,
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z"),
            "secrets_key_id": self.secrets_key_id,
        }


def describe(record: StoredCredential) -> CredentialInfo:
    return CredentialInfo(
        app=record.app,
        provider=Provider(record.provider),
        version=record.version,
        updated_at=record.updated_at,
        secrets_key_id=record.secrets_key_id,
        public=dict(record.public),
    )


async def set_credential(
    store: NotificationStore, keyring: Keyring, app: str, credential: Credential
) -> CredentialInfo:
    """Seal and store ``credential`` as ``app``'s (replacing any); what it stored."""
    provider = credential.provider.value
    sealed = keyring.seal(check_app(app), provider, credential.material())
    record = await store.put_credential(
        app,
        provider,
        secrets_key_id=sealed.key_id,
        ciphertext=sealed.ciphertext,
        public=credential.summary(),
        now=utcnow(),
    )
    assert record is not None  # an unconditional put always writes
    return describe(record)


async def show_credentials(store: NotificationStore, app: str) -> list[CredentialInfo]:
    return [describe(r) for r in await store.get_credentials(app)]


async def delete_credential(store: NotificationStore, app: str, provider: Provider) -> bool:
    return await store.delete_credential(app, provider.value, utcnow())


def open_record(keyring: Keyring, record: StoredCredential) -> Credential:
    """The decrypted credential of a stored record; :class:`SealingError` if it will not
    open (unknown secrets key, tampered, or moved from another app)."""
    sealed = Sealed(record.secrets_key_id, record.ciphertext)
    material = keyring.open(record.app, record.provider, sealed)
    try:
        return credential_from_material(Provider(record.provider), material)
    except (CredentialError, ValueError, KeyError):
        raise SealingError(
            f"the {record.provider} credential of app {record.app!r} opened but is unusable"
        ) from None


async def load_credentials(
    store: NotificationStore, keyring: Keyring, app: str
) -> dict[Provider, Credential]:
    """``app``'s credentials, decrypted, by provider (the worker's call). A provider
    absent from the answer has no app credential: use the environment's default."""
    return {Provider(r.provider): open_record(keyring, r) for r in await store.get_credentials(app)}


@dataclass(frozen=True, slots=True)
class Change:
    """One (app, provider) credential that changed: ``version`` is the stored one,
    ``deleted`` when it was removed (fall back to the environment's default)."""

    app: str
    provider: Provider
    version: int
    deleted: bool


class CredentialWatch:
    """Polls the store for changed credentials: cheap (an indexed range read of recent
    changes), so every worker can call :meth:`poll` every :data:`POLL_SECONDS`."""

    def __init__(self, store: NotificationStore) -> None:
        self._store = store
        self._versions: dict[tuple[str, str], int] = {}
        self._since: datetime | None = None

    async def poll(self) -> list[Change]:
        """The changes since the previous poll (the first poll: every stored credential,
        so its answer is where a watcher starts from)."""
        started = utcnow()
        if self._since is None:
            records = await self._store.list_credentials()
        else:
            records = await self._store.credentials_changed_since(
                self._since - timedelta(seconds=POLL_OVERLAP_SECONDS)
            )
        changes = []
        for record in records:
            key = (record.app, record.provider)
            if self._versions.get(key) == record.version:
                continue  # re-read by the overlap: already seen
            self._versions[key] = record.version
            changes.append(
                Change(record.app, Provider(record.provider), record.version, record.deleted)
            )
        self._since = started
        return changes


@dataclass(frozen=True, slots=True)
class RotationReport:
    rotated: int  # re-sealed under the current key
    current: int  # already under it
    key_id: str


async def rotate_key(store: NotificationStore, keyring: Keyring) -> RotationReport:
    """Re-seal every stored credential under the keyring's current key.

    Each is re-written with a compare-and-set on its version, so a ``set`` that lands
    meanwhile is never undone (it is re-read and, sealed with the current key, left).
    :class:`SealingError` names a credential that opens under neither key; nothing after
    it is skipped silently: run again once the right keys are given.
    """
    rotated = current = 0
    for record in await store.list_credentials():
        for _ in range(_ROTATE_ATTEMPTS):
            if record.secrets_key_id == keyring.current_id:
                current += 1
                break
            credential = open_record(keyring, record)
            sealed = keyring.seal(record.app, record.provider, credential.material())
            written = await store.put_credential(
                record.app,
                record.provider,
                secrets_key_id=sealed.key_id,
                ciphertext=sealed.ciphertext,
                public=record.public,
                now=utcnow(),
                if_version=record.version,
            )
            if written is not None:
                rotated += 1
                break
            fresh = {r.provider: r for r in await store.get_credentials(record.app)}
            if record.provider not in fresh:
                break  # deleted meanwhile
            record = fresh[record.provider]
        else:
            raise SealingError(
                f"the {record.provider} credential of app {record.app!r} "
                "kept changing during the rotation; run it again"
            )
    return RotationReport(rotated, current, keyring.current_id)
