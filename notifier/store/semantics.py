"""What a store's answers mean, decided once on :class:`~notifier.models.Notification` records.

Both backends (:mod:`notifier.store.postgres`, :mod:`notifier.store.mongo`) settle races in
their own query language, but how a result is read back is backend-neutral and lives here,
so the two cannot drift (they had: a claimable document that a claim missed read LOCKED on
one store and NOT_DUE on the other). A backend supplies the primitives of
:class:`SharedStoreLogic` and inherits the rest; the contract suite pins each rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from notifier.models import OPEN_STATUSES, Device, Notification, Status
from notifier.store.base import (
    CancelResult,
    ClaimMiss,
    ClaimResult,
    InsertResult,
    Outcome,
    StoreUnavailable,
)

IdempotencyKey = tuple[str, str]  # (app, idempotency_key)


def classify_miss(current: Notification | None, now: datetime) -> ClaimMiss:
    """Why a claim missed, from the document as the store read it (for metrics only)."""
    if current is None:
        return ClaimMiss.MISSING
    if current.status not in OPEN_STATUSES:
        return ClaimMiss.FINAL
    if current.locked_by is not None and (
        current.lock_expiry is None or current.lock_expiry >= now
    ):
        return ClaimMiss.LOCKED
    due = all(t is None or t <= now for t in (current.scheduled_for, current.next_attempt_at))
    # Claimable as read yet missed: a concurrent claim took it first (PostgreSQL reads the
    # claim's snapshot; MongoDB reads after the update, when the winner may have let it go).
    return ClaimMiss.LOCKED if due else ClaimMiss.NOT_DUE


def cancel_followup(current: Notification | None) -> tuple[CancelResult, Notification | None]:
    """The answer to a cancel whose conditional update matched nothing, from a fresh read."""
    if current is None:
        return CancelResult.NOT_FOUND, None
    if current.status is Status.CANCELLED:  # cancelled already: cancelling is idempotent
        return CancelResult.CANCELLED, current
    return CancelResult.CONFLICT, current


def zero_filled_counts(rows: Iterable[tuple[str, int]]) -> dict[Status, int]:
    """Counts per status from ``(status, n)`` rows, every status present (zeros included)."""
    counts = dict.fromkeys(Status, 0)
    for status, n in rows:
        counts[Status(status)] = int(n)
    return counts


def first_of_each_key(
    notifications: Sequence[Notification],
) -> tuple[list[Notification], dict[IdempotencyKey, int]]:
    """What to insert (a key's first occurrence; later ones replay it) and where each key is."""
    first_of_key: dict[IdempotencyKey, int] = {}
    to_insert: list[Notification] = []
    for i, n in enumerate(notifications):
        ikey = n.idempotency_key
        if ikey is None or first_of_key.setdefault((n.app, ikey), i) == i:
            to_insert.append(n)
    return to_insert, first_of_key


def insert_results(
    notifications: Sequence[Notification],
    first_of_key: Mapping[IdempotencyKey, int],
    created: set[str],
    stored: Mapping[IdempotencyKey, Notification],
) -> list[InsertResult]:
    """:meth:`insert_many`'s answer, in input order: created, or the stored one replayed.

    ``created`` holds the ids the insert wrote; ``stored`` the notifications already stored
    under the keys whose insert was refused.
    """
    results: list[InsertResult] = []
    for n in notifications:
        if n.id in created:
            results.append(InsertResult(n, True))
            continue
        key = (n.app, n.idempotency_key or "")
        first = notifications[first_of_key[key]]
        existing = first if first.id in created else stored.get(key)
        if existing is None:  # a prune deleted it between the two steps: retry later
            raise StoreUnavailable("idempotency conflict without a stored notification")
        results.append(InsertResult(existing, False))
    return results


def _to_the_millisecond(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def landed_before(current: Notification | None, worker_id: str, outcome: Outcome) -> bool:
    """Whether ``current`` already holds ``outcome`` as written by ``worker_id``: an earlier
    try of the same outcome write landed and only its answer was lost (a timeout), so a
    retry that finds the lock gone has not lost it.

    The attempt is ours (its last entry is ``worker_id``'s), it ended when the outcome says
    (compared to the millisecond, a BSON date's precision) and nobody holds the document
    since. A lock that expired instead leaves the attempt unfinished; a new claim is
    someone else's lock or a newer attempt.
    """
    if current is None or current.locked_by is not None or not current.history:
        return False
    last = current.history[-1]
    return (
        last.worker == worker_id
        and last.finished_at is not None
        and _to_the_millisecond(last.finished_at) == _to_the_millisecond(outcome.finished_at)
        and current.status is outcome.status
    )


def by_requested_key(
    keys: Sequence[str], found: Iterable[Notification]
) -> dict[str, list[Notification]]:
    """``found`` (in its order) under each of ``keys`` it answers: its own key is the key,
    or starts with it and ``#`` (a user fan-out). One document may answer two keys."""
    wanted = set(keys)
    grouped: dict[str, list[Notification]] = {}
    for n in found:
        key = n.idempotency_key or ""
        for candidate in {key, *(key[:i] for i, c in enumerate(key) if c == "#")}:
            if candidate in wanted:
                grouped.setdefault(candidate, []).append(n)
    return grouped


def by_user(devices: Iterable[Device]) -> dict[str, list[Device]]:
    """``devices`` (in their order) under their user id."""
    grouped: dict[str, list[Device]] = {}
    for d in devices:
        grouped.setdefault(d.user_id or "", []).append(d)
    return grouped


class SharedStoreLogic:
    """The single-item operations of the store protocol, written over the bulk ones.

    A backend implements :meth:`claim_many`, :meth:`complete_many`, :meth:`get`,
    :meth:`_cancel_if_open` (one conditional update) and the two many-key lookups;
    ``claim``, ``complete``, ``cancel``, ``list_by_idempotency_key`` and ``list_devices``
    then behave the same on every store.
    """

    async def get(self, id: str, app: str | None = None) -> Notification | None:
        raise NotImplementedError

    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        raise NotImplementedError

    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        raise NotImplementedError

    async def _cancel_if_open(self, id: str, app: str, now: datetime) -> Notification | None:
        """Cancel when open and not being pushed; the cancelled notification, else None."""
        raise NotImplementedError

    async def list_by_idempotency_keys(
        self, app: str, keys: Sequence[str]
    ) -> dict[str, list[Notification]]:
        raise NotImplementedError

    async def list_devices_of_users(
        self, app: str, user_ids: Sequence[str], *, active_only: bool = False
    ) -> dict[str, list[Device]]:
        raise NotImplementedError

    async def list_by_idempotency_key(self, app: str, key: str) -> list[Notification]:
        return (await self.list_by_idempotency_keys(app, [key])).get(key, [])

    async def list_devices(
        self, app: str, user_id: str, *, active_only: bool = False
    ) -> list[Device]:
        found = await self.list_devices_of_users(app, [user_id], active_only=active_only)
        return found.get(user_id, [])

    async def claim(
        self, id: str, worker_id: str, now: datetime, lock_seconds: float
    ) -> ClaimResult:
        return (await self.claim_many([id], worker_id, now, lock_seconds))[id]

    async def complete(self, id: str, worker_id: str, outcome: Outcome) -> bool:
        return (await self.complete_many(worker_id, [(id, outcome)]))[0]

    async def cancel(
        self, id: str, app: str, now: datetime
    ) -> tuple[CancelResult, Notification | None]:
        cancelled = await self._cancel_if_open(id, app, now)
        if cancelled is not None:
            return CancelResult.CANCELLED, cancelled
        return cancel_followup(await self.get(id, app))
