"""The store protocol: every operation the API, the workers and the sweeper need.

Two implementations pass one contract suite (``tests/store/test_contract_*.py``):
:mod:`notifier.store.postgres` (asyncpg) and :mod:`notifier.store.mongo` (PyMongo async).
The store is the source of truth; the broker only carries wake-ups (docs/design.md section 1).

Rules every implementation keeps:
- every state change that two processes could race on is ONE atomic conditional update
  (compare-and-set); no read-then-write;
- times are aware UTC datetimes (stores may keep microsecond precision only);
- network failures and timeouts surface as :class:`StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from notifier.models import (
    AttemptOutcome,
    Device,
    Lane,
    LastError,
    Notification,
    Platform,
    Status,
    Wake,
)
from notifier.settings import UnknownOutcomePolicy

# The error a notification is held with when its worker died mid-push and the policy is FAIL.
OUTCOME_UNKNOWN = LastError(
    code="outcome_unknown",
    message="the worker died after it started the push; the outcome is unknown",
)


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class InsertResult:
    """``created`` is False on an idempotency replay: ``notification`` is then the stored one."""

    notification: Notification
    created: bool


class ClaimMiss(StrEnum):
    """Why a claim did not win the document."""

    MISSING = "missing"
    FINAL = "final"  # sent, failed, cancelled or expired already
    LOCKED = "locked"  # another worker holds an unexpired lock
    NOT_DUE = "not_due"  # scheduled_for / next_attempt_at still in the future


@dataclass(frozen=True, slots=True)
class ClaimResult:
    notification: Notification | None
    miss: ClaimMiss | None = None

    @property
    def won(self) -> bool:
        return self.notification is not None


MISSING = ClaimResult(None, ClaimMiss.MISSING)  # frozen: one shared instance will do


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker writes after one push attempt.

    ``status`` is SENT, RETRYING (with ``next_attempt_at``), FAILED or EXPIRED.
    """

    status: Status
    attempt_outcome: AttemptOutcome
    finished_at: datetime
    provider_status: int | None = None
    provider_message_id: str | None = None
    next_attempt_at: datetime | None = None
    last_error: LastError | None = None


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # now cancelled (or was already cancelled)
    CONFLICT = "conflict"  # already sent/failed/expired, or a worker is pushing it right now
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Notification]
    next: str | None  # cursor for ``after``: the id of the last item, None on the last page


# An API key's id: the first hex characters of its SHA-256 (the stored hash). It names the
# key in ``notifier apikey list|revoke`` and reveals nothing of the key itself.
API_KEY_ID_CHARS = 16
_HEX = frozenset("0123456789abcdef")


def is_api_key_id(value: str) -> bool:
    return len(value) == API_KEY_ID_CHARS and set(value) <= _HEX


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """An API key as ``notifier apikey list`` shows it: never the key, nor its whole hash."""

    id: str  # the first API_KEY_ID_CHARS characters of the key's hash
    app: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RecoveredLock:
    """A document whose lock expired (its worker died), as the sweeper found it."""

    id: str
    unknown_attempt: bool  # the last attempt started but never finished
    republish: bool  # False when the policy held it as failed (outcome_unknown)
    app: str = ""
    lane: Lane = Lane.TRANSACTIONAL

    @property
    def wake(self) -> Wake:
        return Wake(self.id, self.app, self.lane)


@dataclass(frozen=True, slots=True, repr=False)
class StoredCredential:
    """An app's provider credential as the store keeps it (``notifier.credentials.vault``
    seals and opens it): the ciphertext, the id of the secrets key that sealed it, and the
    public summary (fingerprint, key ids, topics ...) shown without decrypting anything.

    ``version`` starts at 1 and grows by one on every put, and a delete leaves a tombstone
    (``deleted``, empty ciphertext) with a greater version, so a poller of
    :meth:`NotificationStore.credentials_changed_since` sees deletions too.
    """

    app: str
    provider: str  # "fcm" or "apns"
    secrets_key_id: str
    ciphertext: bytes
    public: dict[str, Any]
    version: int
    updated_at: datetime
    deleted: bool = False

    def __repr__(self) -> str:  # never the ciphertext
        return (
            f"StoredCredential(app={self.app!r}, provider={self.provider!r}, "
            f"version={self.version}, deleted={self.deleted})"
        )


@dataclass(frozen=True, slots=True)
class CredentialHealthRecord:
    """A credential's health as the workers last reported it (issue 16): written by a
    worker when its view of the credential changes, read by ``GET
    /v1/apps/me/credentials/health``. ``app`` is the app, or ``"(environment)"`` for the
    environment's default credential; ``code`` is the refusal's code when unhealthy."""

    app: str
    provider: str  # "fcm" or "apns"
    healthy: bool
    changed_at: datetime
    code: str | None = None


class NotificationStore(Protocol):
    """Async store of notifications, devices and API keys."""

    kind: str  # "postgresql" or "mongodb"

    # -- lifetime -------------------------------------------------------------------
    async def setup(self) -> None:
        """Create tables/collections and indexes, idempotently (safe with many processes)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise :class:`StoreUnavailable` otherwise."""

    # -- API side ---------------------------------------------------------------------
    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        """Insert in bulk (a constant number of round trips), results in input order.

        Idempotent per ``(app, idempotency_key)``: a notification whose key is already stored
        is not inserted; its result is the stored notification with ``created=False``.
        Two processes inserting the same key at once: exactly one creates it.
        The insert is durable when this returns (PostgreSQL committed; MongoDB majority).
        """

    async def get(self, id: str, app: str | None = None) -> Notification | None:
        """The notification, or None if absent or (when ``app`` is given) another app's."""

    async def list_notifications(
        self,
        app: str,
        *,
        user_id: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page:
        """Newest first (UUIDv7 ids sort by creation); ``after`` is an exclusive id cursor."""

    async def list_by_idempotency_key(self, app: str, key: str) -> list[Notification]:
        """Notifications whose key is ``key`` or starts with ``key + '#'`` (user fan-out), by id."""

    async def list_by_idempotency_keys(
        self, app: str, keys: Sequence[str]
    ) -> dict[str, list[Notification]]:
        """:meth:`list_by_idempotency_key` for each of ``keys`` (those with none left out),
        in one round trip whatever their number (a batch's items)."""

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        """Set ``published_at`` on ``pending`` documents that have none and that no worker has
        claimed yet (``attempts == 0``), after a confirmed publish.

        A document a worker claimed first has moved on: its wake-up is consumed, and a mark
        would pass that off as the next one's (a ``retrying`` document would then wait for
        the lost-wake-up take instead of its ``next_attempt_at``)."""

    async def cancel(
        self, id: str, app: str, now: datetime
    ) -> tuple[CancelResult, Notification | None]:
        """Cancel if still open and not being pushed (unlocked or lock expired)."""

    # -- worker side --------------------------------------------------------------------
    async def claim(
        self, id: str, worker_id: str, now: datetime, lock_seconds: float
    ) -> ClaimResult:
        """Atomically lock a due, open, unlocked (or lock-expired) document for ``worker_id``.

        On a win: ``lockedBy``/``lockedAt``/``lockExpiry`` set, ``attempts`` + 1, an
        :class:`~notifier.models.Attempt` with ``started_at=now`` appended to ``history``.
        On a miss the reason is classified (a second read is fine: it is only for metrics).
        """

    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        """:meth:`claim` for many documents in a constant number of round trips.

        One result per distinct id; each document is won or missed exactly as by
        :meth:`claim` (atomic per document; a dead worker's unfinished attempt is marked
        ``unknown``), so concurrent callers never win the same document.
        """

    async def complete(self, id: str, worker_id: str, outcome: Outcome) -> bool:
        """Write an attempt's outcome and release the lock, fenced on ``lockedBy == worker_id``.

        Finishes the last history entry, sets status and outcome fields; RETRYING clears
        ``published_at`` so the sweeper republishes it when ``next_attempt_at`` comes.
        Returns False (and changes nothing) if this worker no longer holds the lock.
        """

    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        """:meth:`complete` for many documents in a constant number of round trips."""

    # -- sweeper --------------------------------------------------------------------------
    async def take_due_for_publish(
        self,
        now: datetime,
        *,
        limit: int,
        unpublished_grace_seconds: float,
        stale_published_seconds: float,
    ) -> list[Wake]:
        """Atomically take documents that need a (re)publish and set ``published_at = now``;
        each as its :class:`~notifier.models.Wake` (id, app, lane), to publish to its queue.

        Taken: unlocked (or lock-expired) open documents that are
        - ``scheduled``/``retrying`` and due, with ``published_at`` unset or earlier than
          when they fell due (``scheduled_for``/``next_attempt_at``): a wake-up from before
          that cannot have delivered them, so they are taken whatever the other cut-offs;
        - ``pending`` with ``published_at`` unset, created more than the grace ago (the API's
          publish failed or it died between insert and publish);
        - open and due with ``published_at`` older than ``stale_published_seconds`` and never
          claimed since (a lost wake-up; the sweeper sets the cut-off from how far the work
          queue has got, see notifier/sweeper.py).
        Each document is taken by one caller only, however many sweepers run at once.
        """

    async def unmark_published(self, ids: Sequence[str]) -> None:
        """Clear ``published_at`` after a failed publish, so the next round retries."""

    async def recover_expired_locks(
        self, now: datetime, *, limit: int, policy: UnknownOutcomePolicy
    ) -> list[RecoveredLock]:
        """Release open documents whose lock expired (their worker died), atomically per doc.

        A last attempt that started but never finished is marked ``unknown``. With policy
        FAIL such a document becomes ``failed`` (``last_error.code = outcome_unknown``);
        otherwise it stays open and ``published_at = now`` (the caller republishes it).
        """

    async def bulk_apps(self) -> list[str]:
        """The apps that have open (pending, scheduled or retrying) bulk-lane notifications,
        sorted: the apps whose bulk queues the workers consume. Cheap whatever the size of the
        table (served by an index of open documents), since every worker asks every few
        seconds."""

    async def counts_by_status(
        self, app: str | None = None, *, open_only: bool = False
    ) -> dict[Status, int]:
        """Count of documents per status (every status present, zeros included).

        ``open_only`` counts only the open statuses (the others read 0): the backlog, cheap
        whatever the size of the table, where counting final documents scans them all.
        """

    async def reopen(self, id: str, now: datetime) -> bool:
        """Reset a ``failed`` or ``expired`` notification to ``pending`` (``notifier dlq replay``).

        Atomic; keeps ``attempts``, ``history`` and ``last_error``; clears the lock and
        ``next_attempt_at``; sets ``published_at = now`` (the caller publishes it next, and
        calls :meth:`unmark_published` if that fails). False when it is not failed/expired.
        """

    async def delete_final(self, before: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` final notifications (sent, failed, cancelled, expired)
        created and last updated before ``before``; the number deleted (``notifier prune``).

        Open ones are kept whatever their age. The scan is bounded by the id (UUIDv7 ids sort
        by creation time), so a round costs the rows it deletes, not the table.
        """

    # -- devices ----------------------------------------------------------------------------
    async def upsert_device(
        self, app: str, token: str, platform: Platform, user_id: str | None, now: datetime
    ) -> tuple[Device, bool]:
        """Register or refresh (and reactivate) a device; True when newly created."""

    async def delete_device(self, app: str, token: str) -> bool: ...

    async def get_device(self, app: str, token: str) -> Device | None: ...

    async def list_devices(
        self, app: str, user_id: str, *, active_only: bool = False
    ) -> list[Device]:
        """The user's devices, oldest registration first."""

    async def list_devices_of_users(
        self, app: str, user_ids: Sequence[str], *, active_only: bool = False
    ) -> dict[str, list[Device]]:
        """:meth:`list_devices` for each of ``user_ids`` (those with none left out), in one
        round trip whatever their number (a batch's items)."""

    async def deactivate_device(
        self,
        app: str,
        token: str,
        reason: str,
        now: datetime,
        *,
        unless_registered_after: datetime | None = None,
    ) -> bool:
        """Mark inactive; skipped when the device was (re)registered after the given time."""

    # -- API keys ------------------------------------------------------------------------------
    async def add_api_key(self, app: str, key_hash: str, now: datetime) -> None: ...

    async def app_for_key_hash(self, key_hash: str) -> str | None: ...

    async def list_api_keys(self, app: str | None = None) -> list[ApiKeyInfo]:
        """Every key (or ``app``'s), oldest first, as ids; never a whole hash."""

    async def revoke_api_key(self, key_id: str) -> str | None:
        """Delete the key whose hash starts with ``key_id`` (an id of
        :func:`is_api_key_id` form; any other value matches nothing): the app it belonged
        to, or None when no key has that id. API replicas cache a key for at most
        ``api.auth.CACHE_SECONDS``, so it stops working everywhere within that time."""

    # -- provider credentials (issue 16) ---------------------------------------------------------
    async def put_credential(
        self,
        app: str,
        provider: str,
        *,
        secrets_key_id: str,
        ciphertext: bytes,
        public: dict[str, Any],
        now: datetime,
        if_version: int | None = None,
    ) -> StoredCredential | None:
        """Upsert ``app``'s ``provider`` credential: ``version`` + 1 (1 when new or after a
        delete), ``updated_at = now``, ``deleted`` false. The stored record.

        ``if_version`` makes it a compare-and-set: written only if the stored version is
        exactly that (the rotation's re-encryption, which must not undo a concurrent
        ``set``); None (nothing written) otherwise.
        """

    async def get_credentials(self, app: str) -> list[StoredCredential]:
        """``app``'s live credentials (no tombstones), by provider."""

    async def delete_credential(self, app: str, provider: str, now: datetime) -> bool:
        """Leave a tombstone (``deleted``, ciphertext emptied, version + 1, ``updated_at =
        now``); False when there was no live credential."""

    async def list_credentials(self) -> list[StoredCredential]:
        """Every live credential of every app, by app and provider (the key rotation)."""

    async def credentials_changed_since(self, since: datetime) -> list[StoredCredential]:
        """Credentials (tombstones included) with ``updated_at >= since``, oldest first.

        An indexed range read that costs the changes, not the table: workers poll it every
        few seconds (see ``notifier.credentials.vault.CredentialWatch``), passing the last
        poll's start less an overlap for clock skew and late commits, and compare versions.
        """

    async def put_credential_health(self, record: CredentialHealthRecord) -> None:
        """Store ``record`` as the (app, provider)'s health unless a later one is stored
        (``changed_at`` decides between workers)."""

    async def get_credential_health(self, apps: Sequence[str]) -> list[CredentialHealthRecord]:
        """The health records of these apps, by app and provider."""

    # -- admin keys: the admin API's bearer keys, apart from apps' keys --------------------------
    async def release_held(
        self, app: str | None, platform: Platform, now: datetime, *, codes: Collection[str]
    ) -> int:
        """Make held notifications due now: ``retrying`` ones of ``app`` (``None``: every
        app) and ``platform`` whose ``last_error.code`` is in ``codes`` (the registry passes
        :data:`~notifier.providers.health.HOLD_CODES`) and whose ``next_attempt_at`` is
        later than ``now`` get ``next_attempt_at = now``; the number changed. The sweeper's
        due take then republishes them. One conditional update: idempotent, and harmless
        when several workers release at once (a later caller finds them due already)."""

    async def add_admin_key(self, key_hash: str, now: datetime) -> None: ...

    async def is_admin_key_hash(self, key_hash: str) -> bool: ...

    async def list_admin_keys(self) -> list[ApiKeyInfo]:
        """Every admin key, oldest first, as ids (``app`` is empty)."""

    async def revoke_admin_key(self, key_id: str) -> bool:
        """Delete the admin key with this id (:func:`is_api_key_id` form); False if none."""
