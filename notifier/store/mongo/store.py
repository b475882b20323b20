"""The notification store on MongoDB, through PyMongo's native async API (AsyncMongoClient).

Same semantics as the PostgreSQL store (one contract suite holds both; the backend-neutral
rules are in :mod:`notifier.store.semantics`). Every race is settled by a conditional write
that MongoDB applies atomically per document: one ``update_many`` under a lease id of the
call's own for a message's claims, one bulk write of ``update_one`` fenced on ``lockedBy``
for outcomes, and for the sweeper's batches a read of candidates followed by one bulk write
of compare-and-set updates (MongoDB has no updateMany with a limit), so concurrent sweepers
never take the same document: each a constant number of round trips whatever the number of
ids.

Durability: at connect the ``hello`` answer tells the deployment. On a replica set (or a
sharded cluster behind mongos) every write uses write concern ``majority``, so an
acknowledged insert survives a failover; on a standalone server ``w=1, j=True``, the most a
single node can give (acknowledged after the journal is on disk; see "Acknowledgment
Behavior" in https://www.mongodb.com/docs/manual/reference/write-concern/). Nothing here
needs a replica set: no transactions (they need one:
https://www.mongodb.com/docs/manual/core/transactions-production-consideration/), no change
streams. Filters, pipelines and
indexes live in :mod:`notifier.store.mongo.queries`, the document mapping in
:mod:`notifier.store.mongo.documents`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from pymongo import DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from pymongo.monitoring import CommandListener

from notifier.models import Attempt, Notification, Status, Wake, id_floor
from notifier.settings import UnknownOutcomePolicy
from notifier.store.base import (
    OUTCOME_UNKNOWN,
    ClaimResult,
    InsertResult,
    Outcome,
    Page,
    RecoveredLock,
)
from notifier.store.mongo import queries as q
from notifier.store.mongo.client import Document, mapped, open_database
from notifier.store.mongo.credentials import CredentialStoreMixin
from notifier.store.mongo.devices import DeviceStoreMixin
from notifier.store.mongo.documents import (
    WAKE_FIELDS,
    attempt_to_document,
    document_to_notification,
    lane_of,
    notification_to_document,
    wake_of,
)
from notifier.store.semantics import (
    SharedStoreLogic,
    by_requested_key,
    classify_miss,
    first_of_each_key,
    insert_results,
    landed_before,
    zero_filled_counts,
)

DUPLICATE_KEY = 11000


class MongoStore(CredentialStoreMixin, DeviceStoreMixin, SharedStoreLogic):
    """:class:`~notifier.store.base.NotificationStore` on MongoDB."""

    kind = "mongodb"

    def __init__(self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> None:
        self._client = client
        self._db = db
        self._notifications: AsyncCollection[Document] = db["notifications"]
        self._devices = db["devices"]
        self._api_keys = db["api_keys"]
        self._credentials = db["credentials"]
        self._admin_keys = db["admin_keys"]
        self._credential_health = db["credential_health"]
        self.closed = False

    @classmethod
    async def connect(
        cls, url: str, *, event_listeners: Sequence[CommandListener] = ()
    ) -> MongoStore:
        """Connect and pick the write concern; :class:`StoreUnavailable` if unreachable.

        ``event_listeners`` watch every command the client sends (tests count round trips).
        """
        client, db = await open_database(url, event_listeners=event_listeners)
        return cls(client, db)

    # -- lifetime -------------------------------------------------------------------------------
    @mapped
    async def setup(self) -> None:
        """Create the indexes (and so the collections); a no-op when they exist."""
        await self._notifications.create_indexes(q.NOTIFICATION_INDEXES)
        await self._devices.create_indexes(q.DEVICE_INDEXES)
        await self._setup_credentials()

    async def close(self) -> None:
        self.closed = True
        await self._client.close()

    @mapped
    async def ping(self) -> None:
        await self._db.command("ping")

    # -- API side -------------------------------------------------------------------------------
    @mapped
    async def insert_many(self, notifications: Sequence[Notification]) -> list[InsertResult]:
        # One unordered insert; a key already stored is refused by the unique index and its
        # stored notification fetched with one read for all of them (never one per item).
        to_insert, first_of_key = first_of_each_key(notifications)
        duplicates = await self._insert_ignoring_duplicates(to_insert)
        created = {n.id for i, n in enumerate(to_insert) if i not in duplicates}
        stored = await self._stored_for_keys([to_insert[i] for i in sorted(duplicates)])
        return insert_results(notifications, first_of_key, created, stored)

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
        clauses = [
            {"app": app, "idempotency_key": {"$in": keys, **q.IS_STRING}}
            for app, keys in keys_by_app.items()
        ]
        query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        cursor = q.in_one_reply(self._notifications.find(query), len(conflicting))
        docs = await cursor.to_list(None)
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
    async def list_by_idempotency_keys(
        self, app: str, keys: Sequence[str]
    ) -> dict[str, list[Notification]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        docs = await self._notifications.find(q.keyed(app, wanted)).sort("_id", 1).to_list(None)
        return by_requested_key(wanted, (document_to_notification(d) for d in docs))

    @mapped
    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        if ids:
            await self._notifications.update_many(
                q.unclaimed_unpublished(list(ids)), {"$set": {"published_at": at}}
            )

    @mapped
    async def _cancel_if_open(self, id: str, app: str, now: datetime) -> Notification | None:
        doc = await self._notifications.find_one_and_update(
            {"_id": id, "app": app, "status": {"$in": q.OPEN}, **q.unlocked(now)},
            {
                "$set": {"status": Status.CANCELLED.value, "updated_at": now},
                "$unset": dict.fromkeys([*q.LOCK_FIELDS, "next_attempt_at"], ""),
            },
            return_document=ReturnDocument.AFTER,
        )
        return document_to_notification(doc) if doc is not None else None

    # -- worker side ----------------------------------------------------------------------------
    @mapped
    async def claim_many(
        self, ids: Sequence[str], worker_id: str, now: datetime, lock_seconds: float
    ) -> dict[str, ClaimResult]:
        # Two round trips whatever the number of ids: one update_many stamps a lease id of
        # this call's own on every document that is still claimable (the filter is checked
        # per document, atomically, so concurrent claimers never both win one), then one
        # read of all the ids tells the won (our lease) from the missed, and why they missed.
        distinct = list(dict.fromkeys(ids))
        if not distinct:
            return {}
        lease = uuid.uuid4().hex  # unique per call, not per worker: it names this claim only
        attempt = attempt_to_document(Attempt(worker=worker_id, started_at=now))
        expiry = now + timedelta(seconds=lock_seconds)
        await self._notifications.update_many(
            q.claimable(distinct, now), q.claim_update(worker_id, lease, now, expiry, attempt)
        )
        cursor = q.in_one_reply(self._notifications.find({"_id": {"$in": distinct}}), len(distinct))
        docs = await cursor.to_list(None)
        current = {d["_id"]: d for d in docs}
        results: dict[str, ClaimResult] = {}
        for id in distinct:
            doc = current.get(id)
            read = document_to_notification(doc) if doc is not None else None
            if doc is not None and doc.get(q.LEASE) == lease:
                results[id] = ClaimResult(read)
            else:
                results[id] = ClaimResult(None, classify_miss(read, now))
        return results

    @mapped
    async def complete_many(
        self, worker_id: str, items: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        if not items:
            return []
        # One bulk write for every outcome; each update fenced on the lock holder.
        write = uuid.uuid4().hex
        ops = [
            UpdateOne(q.complete_filter(id, worker_id), q.complete_update(o, write))
            for id, o in items
        ]
        result = await self._notifications.bulk_write(ops, ordered=False)
        if result.matched_count == len(items):
            return [True] * len(items)
        # Some missed: one read tells which updates took (they carry this write's id), and
        # which an earlier try of the same write had already written (its answer was lost).
        ids = [id for id, _ in items]
        cursor = self._notifications.find({"_id": {"$in": ids}})
        docs = {d["_id"]: d for d in await q.in_one_reply(cursor, len(ids)).to_list(None)}
        done = {id for id, d in docs.items() if d.get(q.OUTCOME_WRITE) == write}
        for id, outcome in items:
            doc = docs.get(id)
            if id in done or doc is None:
                continue
            if landed_before(document_to_notification(doc), worker_id, outcome):
                done.add(id)
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
    ) -> list[Wake]:
        if limit <= 0:
            return []
        base = q.due_for_publish(
            now,
            now - timedelta(seconds=unpublished_grace_seconds),
            now - timedelta(seconds=stale_published_seconds),
        )
        projection = {"updated_at": 1, "published_at": 1, **WAKE_FIELDS}
        candidates = await self._notifications.find(base, projection).limit(limit).to_list(None)
        write = uuid.uuid4().hex
        ops = [
            UpdateOne(q.unchanged(d), {"$set": {"published_at": now, q.SWEEP_WRITE: write}})
            for d in candidates
        ]
        wakes = {d["_id"]: wake_of(d) for d in candidates}
        return [wakes[i] for i in await self._swept(ops, list(wakes), write)]

    async def _swept(self, ops: list[UpdateOne], ids: list[str], write: str) -> list[str]:
        """Run a sweeper batch as one bulk write of compare-and-set updates stamped ``write``;
        the ids it changed (a concurrent sweeper or claim may have got to some first)."""
        if not ops:
            return []
        result = await self._notifications.bulk_write(ops, ordered=False)
        if result.matched_count == len(ops):
            return ids
        cursor = self._notifications.find(q.swept_by(ids, write), {"_id": 1})
        won = {d["_id"] for d in await q.in_one_reply(cursor, len(ids)).to_list(None)}
        return [i for i in ids if i in won]

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
        projection = {"lockedBy": 1, "lockExpiry": 1, "history": {"$slice": -1}, **WAKE_FIELDS}
        cursor = self._notifications.find(q.expired_locks(now), projection)
        candidates = await cursor.sort("lockExpiry", 1).limit(limit).to_list(None)
        fail = policy is UnknownOutcomePolicy.FAIL
        error = OUTCOME_UNKNOWN.to_dict()
        write = uuid.uuid4().hex
        found: dict[str, RecoveredLock] = {}
        ops: list[UpdateOne] = []
        for doc in candidates:
            last = (doc.get("history") or [None])[-1]
            unknown = bool(last) and last.get("finished_at") is None and not last.get("outcome")
            update = q.recover_update(now, unknown, fail, error, write)
            ops.append(UpdateOne(q.recover_filter(doc, now), update))
            found[doc["_id"]] = RecoveredLock(
                doc["_id"],
                unknown_attempt=unknown,
                republish=not (unknown and fail),
                app=doc["app"],
                lane=lane_of(doc),
            )
        # one missing from the answer: another sweeper (or a claim) got there first
        return [found[i] for i in await self._swept(ops, list(found), write)]

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
    async def bulk_apps(self) -> list[str]:
        # One distinct over the open_bulk_app index (a DISTINCT_SCAN on MongoDB: one key read
        # per app, not per document); sorted here, the same order on every store.
        return sorted(await self._notifications.distinct("app", q.OPEN_BULK))

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
        return zero_filled_counts((row["_id"], row["n"]) for row in rows)
