"""The notification store on MongoDB, through PyMongo's native async API (AsyncMongoClient).

Same semantics as the PostgreSQL store (one contract suite holds both). Every race is settled
by one conditional single-document write: ``find_one_and_update`` for a claim, ``update_one``
fenced on ``lockedBy`` for an outcome, and for the sweeper's batches a read of candidate ids
followed by one compare-and-set ``update_one`` per candidate (MongoDB has no updateMany with
a limit), so concurrent sweepers never take the same document.

Durability: at connect the ``hello`` answer tells the deployment. On a replica set (or a
sharded cluster behind mongos) every write uses write concern ``majority``, so an
acknowledged insert survives a failover; on a standalone server ``w=1, j=True``, the most a
single node can give (acknowledged after the journal is on disk). Filters, pipelines and
indexes live in :mod:`notifier.store.mongo.queries`, the document mapping in
:mod:`notifier.store.mongo.documents`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from pymongo import DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from notifier.models import Attempt, Notification, Status, as_utc, id_floor
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import (
    OUTCOME_UNKNOWN,
    CancelResult,
    ClaimMiss,
    ClaimResult,
    InsertResult,
    Outcome,
    Page,
    RecoveredLock,
    StoreUnavailable,
)
from notifier.store.mongo import queries as q
from notifier.store.mongo.client import Document, mapped, open_database
from notifier.store.mongo.devices import DeviceStoreMixin
from notifier.store.mongo.documents import (
    attempt_to_document,
    document_to_notification,
    notification_to_document,
)

DUPLICATE_KEY = 11000


def _classify_miss(doc: Document | None, now: datetime) -> ClaimMiss:
    """Why a claim missed, from the document as read right after (for metrics only)."""
    if doc is None:
        return ClaimMiss.MISSING
    if doc["status"] not in q.OPEN:
        return ClaimMiss.FINAL
    expiry = doc.get("lockExpiry")
    if doc.get("lockedBy") is not None and (expiry is None or as_utc(expiry) >= now):
        return ClaimMiss.LOCKED
    return ClaimMiss.NOT_DUE


class MongoStore(DeviceStoreMixin):
    """:class:`~notifier.store.base.NotificationStore` on MongoDB."""

    kind = "mongodb"

    def __init__(self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> None:
        self._client = client
        self._db = db
        self._notifications: AsyncCollection[Document] = db["notifications"]
        self._devices = db["devices"]
        self._api_keys = db["api_keys"]
        self.closed = False

    @classmethod
    async def connect(cls, url: str) -> MongoStore:
        """Connect and pick the write concern; :class:`StoreUnavailable` if unreachable."""
        client, db = await open_database(url)
        return cls(client, db)

    # -- lifetime -------------------------------------------------------------------------------
    @mapped
    async def setup(self) -> None:
        """Create the indexes (and so the collections); a no-op when they exist."""
        await self._notifications.create_indexes(q.NOTIFICATION_INDEXES)
        await self._devices.create_indexes(q.DEVICE_INDEXES)

    async def close(self) -> None:
        self.closed = True
        await self._client.close()

    @mapped
    async def ping(self) -> None:
        await self._db.command("ping")

    # -- API side -------------------------------------------------------------------------------
    @mapped
    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        # The first occurrence of a key in the batch is the one inserted; later ones replay it.
        first_of_key: dict[tuple[str, str], int] = {}
        to_insert: list[Notification] = []
        for i, n in enumerate(notifications):
            ikey = n.idempotency_key
            if ikey is None or first_of_key.setdefault((n.app, ikey), i) == i:
                to_insert.append(n)
        duplicates = await self._insert_ignoring_duplicates(to_insert)
        created = {n.id for i, n in enumerate(to_insert) if i not in duplicates}
        stored = await self._stored_for_keys([to_insert[i] for i in sorted(duplicates)])
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

    async def _insert_ignoring_duplicates(self, notifications: Sequence[Notification]) -> set[int]:
        """One unordered insert; the indexes of the documents refused as duplicate keys."""
        if not notifications:
            return set()
        try:
            await self._notifications.insert_many(
                [notification_to_document(n) for n in notifications], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY or notifications[e["index"]].idempotency_key is None
                for e in errors
            ):
                raise  # not (only) idempotency replays: a real failure
            return {int(e["index"]) for e in errors}
        return set()

    async def _stored_for_keys(
        self, conflicting: Sequence[Notification]
    ) -> dict[tuple[str, str], Notification]:
        if not conflicting:
            return {}
        keys_by_app: dict[str, list[str]] = {}
        for n in conflicting:
            keys_by_app.setdefault(n.app, []).append(n.idempotency_key or "")
        query = {
            "$or": [
                {"app": app, "idempotency_key": {"$in": keys, **q.IS_STRING}}
                for app, keys in keys_by_app.items()
            ]
        }
        docs = await self._notifications.find(query).to_list(None)
        found = (document_to_notification(d) for d in docs)
        return {(n.app, n.idempotency_key or ""): n for n in found}

    @mapped
    async def get(self, id: str, app: str | None = None) -> Notification | None:
        query: Document = {"_id": id} if app is None else {"_id": id, "app": app}
        doc = await self._notifications.find_one(query)
        return document_to_notification(doc) if doc is not None else None

    @mapped
    async def list_notifications(
        self,
        app: str,
        *,
        user_id: str | None = None,
        status: Status | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Page:
        limit = max(1, limit)
        query: Document = {"app": app}
        if user_id is not None:
            query["user_id"] = user_id
        if status is not None:
            query["status"] = status.value
        if after is not None:
            query["_id"] = {"$lt": after}
        cursor = self._notifications.find(query).sort("_id", DESCENDING).limit(limit + 1)
        docs = await cursor.to_list(None)
        items = [document_to_notification(d) for d in docs[:limit]]
        return Page(items=items, next=items[-1].id if len(docs) > limit else None)

    @mapped
    async def list_by_idempotency_key(self, app: str, key: str) -> list[Notification]:
        query = {"app": app, "idempotency_key": {"$regex": q.key_prefix_regex(key), **q.IS_STRING}}
        docs = await self._notifications.find(query).sort("_id", 1).to_list(None)
        return [document_to_notification(d) for d in docs]

    @mapped
    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        if ids:
            await self._notifications.update_many(
                {"_id": {"$in": list(ids)}, "published_at": None}, {"$set": {"published_at": at}}
            )

    @mapped
    async def cancel(
        self, id: str, app: str, now: datetime
    ) -> tuple[CancelResult, Notification | None]:
        doc = await self._notifications.find_one_and_update(
            {"_id": id, "app": app, "status": {"$in": q.OPEN}, **q.unlocked(now)},
            {
                "$set": {"status": Status.CANCELLED.value, "updated_at": now},
                "$unset": dict.fromkeys([*q.LOCK_FIELDS, "next_attempt_at"], ""),
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return CancelResult.CANCELLED, document_to_notification(doc)
        current = await self.get(id, app)
        if current is None:
            return CancelResult.NOT_FOUND, None
        if current.status is Status.CANCELLED:
            return CancelResult.CANCELLED, current
        return CancelResult.CONFLICT, current

    # -- worker side ----------------------------------------------------------------------------
    async def claim(
        self, id: str, worker_id: str, now: datetime, lock_seconds: float
    ) -> ClaimResult:
        return (await self.claim_many([id], worker_id, now, lock_seconds))[id]

    @mapped
    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        # One atomic find_one_and_update per document, all in flight at once: MongoDB has no
        # multi-document compare-and-set that returns the documents it changed. The misses
        # are then classified with one read for all of them.
        distinct = list(dict.fromkeys(ids))
        attempt = attempt_to_document(Attempt(worker=worker_id, started_at=now))
        update = q.claim_update(worker_id, now, now + timedelta(seconds=lock_seconds), attempt)
        won = await asyncio.gather(
            *(
                self._notifications.find_one_and_update(
                    q.claim_filter(id, now), update, return_document=ReturnDocument.AFTER
                )
                for id in distinct
            )
        )
        results = {
            id: ClaimResult(document_to_notification(doc))
            for id, doc in zip(distinct, won, strict=True)
            if doc is not None
        }
        missed = [id for id in distinct if id not in results]
        if missed:
            cursor = self._notifications.find({"_id": {"$in": missed}}, q.MISS_PROJECTION)
            current = {d["_id"]: d for d in await cursor.to_list(None)}
            for id in missed:
                results[id] = ClaimResult(None, _classify_miss(current.get(id), now))
        return {id: results[id] for id in distinct}

    @mapped
    async def complete(self, id: str, worker_id: str, outcome: Outcome) -> bool:
        result = await self._notifications.update_one(
            q.complete_filter(id, worker_id), q.complete_update(outcome)
        )
        return result.matched_count == 1

    @mapped
    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        if not items:
            return []
        ops = [UpdateOne(q.complete_filter(id, worker_id), q.complete_update(o)) for id, o in items]
        result = await self._notifications.bulk_write(ops, ordered=False)
        if result.matched_count == len(items):
            return [True] * len(items)
        # Some lost their lock: a second read tells which updates took (only the count is known).
        docs = await self._notifications.find(
            q.completed_by(worker_id, list(items)), {"_id": 1}
        ).to_list(None)
        done = {d["_id"] for d in docs}
        return [id in done for id, _ in items]

    # -- sweeper --------------------------------------------------------------------------------
    @mapped
    async def take_due_for_publish(
        self,
        now: datetime,
        *,
        limit: int,
        unpublished_grace_seconds: float,
        stale_published_seconds: float,
    ) -> list[str]:
        if limit <= 0:
            return []
        base = q.due_for_publish(
            now,
            now - timedelta(seconds=unpublished_grace_seconds),
            now - timedelta(seconds=stale_published_seconds),
        )
        candidates = (
            await self._notifications.find(base, {"published_at": 1}).limit(limit).to_list(None)
        )

        async def take(doc: Document) -> bool:
            guard = q.take_filter(base, doc["_id"], doc.get("published_at"))
            result = await self._notifications.update_one(guard, {"$set": {"published_at": now}})
            return result.matched_count == 1

        taken = await asyncio.gather(*(take(d) for d in candidates))
        return [d["_id"] for d, won in zip(candidates, taken, strict=True) if won]

    @mapped
    async def unmark_published(self, ids: Sequence[str]) -> None:
        if ids:
            await self._notifications.update_many(
                {"_id": {"$in": list(ids)}}, {"$unset": {"published_at": ""}}
            )

    @mapped
    async def recover_expired_locks(
        self, now: datetime, *, limit: int, policy: UnknownOutcomePolicy
    ) -> list[RecoveredLock]:
        if limit <= 0:
            return []
        projection = {"lockedBy": 1, "lockExpiry": 1, "history": {"$slice": -1}}
        cursor = self._notifications.find(q.expired_locks(now), projection)
        candidates = await cursor.sort("lockExpiry", 1).limit(limit).to_list(None)
        fail = policy is UnknownOutcomePolicy.FAIL
        error = OUTCOME_UNKNOWN.to_dict()

        async def recover(doc: Document) -> RecoveredLock | None:
            last = (doc.get("history") or [None])[-1]
            unknown = bool(last) and last.get("finished_at") is None and not last.get("outcome")
            result = await self._notifications.update_one(
                q.recover_filter(doc, now), q.recover_update(now, unknown, fail, error)
            )
            if result.matched_count != 1:
                return None  # another sweeper (or a claim) got there first
            return RecoveredLock(
                doc["_id"], unknown_attempt=unknown, republish=not (unknown and fail)
            )

        recovered = await asyncio.gather(*(recover(d) for d in candidates))
        return [r for r in recovered if r is not None]

    @mapped
    async def reopen(self, id: str, now: datetime) -> bool:
        result = await self._notifications.update_one(
            {"_id": id, "status": {"$in": [Status.FAILED.value, Status.EXPIRED.value]}},
            {
                "$set": {"status": Status.PENDING.value, "published_at": now, "updated_at": now},
                "$unset": dict.fromkeys([*q.LOCK_FIELDS, "next_attempt_at"], ""),
            },
        )
        return result.matched_count == 1

    @mapped
    async def delete_final(self, before: datetime, *, limit: int) -> int:
        if limit <= 0:
            return 0
        match = q.final_before(id_floor(before), before)
        cursor = self._notifications.find(match, {"_id": 1}).sort("_id", 1).limit(limit)
        ids = [d["_id"] for d in await cursor.to_list(None)]
        if not ids:
            return 0
        result = await self._notifications.delete_many({**match, "_id": {"$in": ids}})
        return result.deleted_count

    @mapped
    async def counts_by_status(
        self, app: str | None = None, *, open_only: bool = False
    ) -> dict[Status, int]:
        match: Document = {"app": app} if app is not None else {}
        if open_only:
            match["status"] = {"$in": q.OPEN}
        pipeline: list[Document] = [{"$match": match}] if match else []
        pipeline.append({"$group": {"_id": "$status", "n": {"$sum": 1}}})
        rows = await (await self._notifications.aggregate(pipeline)).to_list(None)
        counts = dict.fromkeys(Status, 0)
        for row in rows:
            counts[Status(row["_id"])] = int(row["n"])
        return counts
