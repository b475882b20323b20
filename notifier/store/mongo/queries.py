"""The filters, updates, cursor settings and indexes that :class:`~notifier.store.mongo.MongoStore`
sends to MongoDB.

Pure builders (no I/O), kept apart from the store so that every condition a race is settled
on reads in one place. Each one mirrors a statement of :mod:`notifier.store.postgres.sql`.

Updates that touch the last history entry are aggregation-pipeline updates (MongoDB 4.2+):
plain update operators cannot address "the last element" of an array. In a pipeline every
string starting with ``$`` is a field path, so every value we pass is wrapped in
``$literal``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bson import Regex
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.cursor import AsyncCursor

from notifier.models import FINAL_STATUSES, OPEN_STATUSES, AttemptOutcome, Lane, Status
from notifier.store.base import Outcome
from notifier.store.mongo.documents import last_error_to_document

Filter = dict[str, Any]
Pipeline = list[dict[str, Any]]

OPEN = sorted(s.value for s in OPEN_STATUSES)
FINAL = sorted(s.value for s in FINAL_STATUSES)
# The final statuses other than sent: about a tenth of a grown collection
# (postgres_sql.UNSENT_FINAL).
UNSENT_FINAL = sorted(s.value for s in FINAL_STATUSES if s is not Status.SENT)
# The id of the claim call that holds the lock: claim_many stamps it on every document it
# wins, then reads back by it. Unique per call, it is cleared with the lock.
LEASE = "lockLease"
LOCK_FIELDS = ["lockedBy", "lockedAt", "lockExpiry", LEASE]
# The id of the complete_many call that wrote the outcome (its own writes, told apart).
OUTCOME_WRITE = "outcomeWrite"
# The id of the sweeper call (a take or a recovery) that last changed the document.
SWEEP_WRITE = "sweepWrite"

# The bulk lane's open documents (postgres_sql.OPEN_BULK): bulk_apps' filter, and the partial
# filter of the index that serves it, which MongoDB uses only for a query that implies it.
OPEN_BULK: Filter = {"lane": Lane.BULK.value, "status": {"$in": OPEN}}

NOTIFICATION_INDEXES = [
    IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="status_next_attempt"),
    IndexModel([("status", ASCENDING), ("lockExpiry", ASCENDING)], name="status_lock_expiry"),
    IndexModel(
        [("app", ASCENDING), ("idempotency_key", ASCENDING)],
        name="app_idempotency_key",
        unique=True,
        # Partial rather than sparse: sparse would still index {app, idempotency_key: null}.
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    ),
    IndexModel([("user_id", ASCENDING), ("created_at", ASCENDING)], name="user_created"),
    IndexModel([("target.token", ASCENDING)], name="target_token"),
    IndexModel([("app", ASCENDING), ("_id", DESCENDING)], name="app_id"),
    # An app's failed, cancelled or expired notifications, newest first (list_notifications
    # with that status): rare in a grown collection, so app_id walked past every sent one to
    # fill a page. Partial: only those documents (postgres_sql notifications_app_unsent_final);
    # the status in the key, so the bounds answer the whole filter.
    IndexModel(
        [("app", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)],
        name="app_id_unsent_final",
        partialFilterExpression={"status": {"$in": UNSENT_FINAL}},
    ),
    IndexModel([("status", ASCENDING), ("published_at", ASCENDING)], name="status_published"),
    # bulk_apps: a distinct of app over the open bulk documents. Partial, so it holds the bulk
    # backlog only (an $in in a partial filter needs MongoDB 6.0); lane and status in the key
    # so that the index bounds answer the whole filter and a DISTINCT_SCAN reads one key per
    # app (https://www.mongodb.com/docs/manual/reference/explain-results/).
    IndexModel(
        [("lane", ASCENDING), ("status", ASCENDING), ("app", ASCENDING)],
        name="open_bulk_app",
        partialFilterExpression=OPEN_BULK,
    ),
]
DEVICE_INDEXES = [
    IndexModel([("app", ASCENDING), ("token", ASCENDING)], name="app_token", unique=True),
    IndexModel([("app", ASCENDING), ("user_id", ASCENDING)], name="app_user"),
]

# A string key, so that the planner may use the partial (app, idempotency_key) index.
IS_STRING = {"$type": "string"}


def in_one_reply(cursor: AsyncCursor[Any], most: int) -> AsyncCursor[Any]:
    """``cursor`` set to bring its (at most ``most``) documents in the find's own reply.

    Without it the server sends 101 documents, then the rest on a getMore; and a batch that
    fills exactly leaves the cursor open, costing a getMore to learn it is exhausted. A
    limit closes the cursor in the first reply (the limit is reached or nothing is left).
    """
    return cursor.limit(most).batch_size(most)


def literal(value: Any) -> dict[str, Any]:
    return {"$literal": value}


# ``{f: {$not: {$gt: t}}}`` is "f absent, null or at most t": $not also selects documents
# without the field (https://www.mongodb.com/docs/manual/reference/operator/query/not/).
# Written so rather than as an $or of two clauses, each filter below stays a conjunction of
# plain field predicates: a planner then serves an ``_id $in`` beside them from the _id
# index, where some MongoDB-compatible servers plan any $or (or $expr) as a collection scan.


def unlocked(now: datetime) -> Filter:
    """Not locked, or its lock expired (its worker died). The lock fields are set and unset
    together (LOCK_FIELDS), so "no lockExpiry" is "not locked"."""
    return {"lockExpiry": {"$not": {"$gte": now}}}


def due(now: datetime) -> Filter:
    """Neither scheduled nor held back for a retry past ``now``."""
    return {
        "scheduled_for": {"$not": {"$gt": now}},
        "next_attempt_at": {"$not": {"$gt": now}},
    }


def keyed(app: str, keys: list[str]) -> Filter:
    """``app``'s documents whose key is one of ``keys`` or starts with it and ``#``: one
    anchored prefix regex a key in an ``$in``, so the (app, idempotency_key) index bounds
    each (https://www.mongodb.com/docs/manual/reference/operator/query/in/)."""
    patterns = [Regex(key_prefix_regex(k)) for k in keys]
    return {"app": app, "idempotency_key": {"$in": patterns, **IS_STRING}}


def key_prefix_regex(key: str) -> str:
    """``key`` itself or ``key#...`` (a user fan-out); ``\\z`` is PCRE's absolute end."""
    return "^" + re.escape(key).replace("\x00", "\\x00") + r"(?:#|\z)"


# -- history rewrites ----------------------------------------------------------------------------


def _unfinished(entry: str) -> dict[str, Any]:
    """The attempt in variable ``entry`` started but has neither an end nor an outcome."""
    return {
        "$and": [
            {"$eq": [{"$ifNull": [f"$${entry}.finished_at", None]}, None]},
            {"$eq": [{"$ifNull": [f"$${entry}.outcome", None]}, None]},
        ]
    }


def _rewrite_last(new_last: dict[str, Any]) -> dict[str, Any]:
    """``history`` with its last entry replaced by ``new_last`` (which may use ``$$entry``)."""
    history = {"$ifNull": ["$history", []]}
    return {
        "$let": {
            "vars": {"h": history, "n": {"$size": history}},
            "in": {
                "$map": {
                    "input": {"$range": [0, "$$n"]},
                    "as": "i",
                    "in": {
                        "$let": {
                            "vars": {"entry": {"$arrayElemAt": ["$$h", "$$i"]}},
                            "in": {
                                "$cond": [
                                    {"$eq": ["$$i", {"$subtract": ["$$n", 1]}]},
                                    new_last,
                                    "$$entry",
                                ]
                            },
                        }
                    },
                }
            },
        }
    }


def mark_last_unknown() -> dict[str, Any]:
    """``history`` with an unfinished last attempt marked ``unknown`` (its worker died)."""
    marked = {"$mergeObjects": ["$$entry", {"outcome": literal(AttemptOutcome.UNKNOWN.value)}]}
    return _rewrite_last({"$cond": [_unfinished("entry"), marked, "$$entry"]})


def finish_last(outcome: Outcome) -> dict[str, Any]:
    patch = {
        "finished_at": literal(outcome.finished_at),
        "outcome": literal(outcome.attempt_outcome.value),
        "provider_status": literal(outcome.provider_status),
    }
    return _rewrite_last({"$mergeObjects": ["$$entry", patch]})


# -- worker side ----------------------------------------------------------------------------------


def claimable(ids: list[str], now: datetime) -> Filter:
    """Those of ``ids`` that are open, due and unlocked (or lock-expired)."""
    return {"_id": {"$in": ids}, "status": {"$in": OPEN}, **due(now), **unlocked(now)}


def claim_update(
    worker_id: str, lease: str, now: datetime, lock_expiry: datetime, attempt: dict[str, Any]
) -> Pipeline:
    """Lock under ``lease``, count the attempt, close a dead worker's attempt as unknown,
    append ours."""
    return [
        {
            "$set": {
                LEASE: literal(lease),
                "lockedBy": literal(worker_id),
                "lockedAt": literal(now),
                "lockExpiry": literal(lock_expiry),
                "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, 1]},
                "updated_at": literal(now),
                "history": {"$concatArrays": [mark_last_unknown(), [literal(attempt)]]},
            }
        }
    ]


def complete_filter(id: str, worker_id: str) -> Filter:
    return {"_id": id, "lockedBy": worker_id}


def complete_update(outcome: Outcome, write: str) -> Pipeline:
    """The outcome written and the lock released (same fields as PostgreSQL's COMPLETE_MANY),
    stamped with ``write``, the id of the complete_many call."""
    retrying = outcome.status is Status.RETRYING
    fields: dict[str, Any] = {
        OUTCOME_WRITE: literal(write),
        "status": literal(outcome.status.value),
        "updated_at": literal(outcome.finished_at),
        "history": finish_last(outcome),
    }
    unset = list(LOCK_FIELDS)
    if outcome.status is Status.SENT:
        fields["sent_at"] = literal(outcome.finished_at)
    if outcome.provider_message_id is not None:
        fields["provider_message_id"] = literal(outcome.provider_message_id)
    if outcome.last_error is not None:
        fields["last_error"] = literal(last_error_to_document(outcome.last_error))
    if retrying and outcome.next_attempt_at is not None:
        fields["next_attempt_at"] = literal(outcome.next_attempt_at)
    else:
        unset.append("next_attempt_at")
    if retrying:
        unset.append("published_at")  # the sweeper republishes it when it is due
    return [{"$set": fields}, {"$unset": unset}]


# -- sweeper ---------------------------------------------------------------------------------


# Never published, or last published before it fell due: that wake-up missed the claim as not
# due, so it does not count (postgres_sql.AWAITING_PUBLISH). In an expression a missing field
# is null, which sorts before every date.
AWAITING_PUBLISH: list[Filter] = [
    {"published_at": None},
    {"$expr": {"$lt": ["$published_at", "$next_attempt_at"]}},
    {"$expr": {"$lt": ["$published_at", "$scheduled_for"]}},
]


def unclaimed_unpublished(ids: list[str]) -> Filter:
    """What ``mark_published`` may mark: not claimed yet (postgres_sql.MARK_PUBLISHED)."""
    return {
        "_id": {"$in": ids},
        "published_at": None,
        "attempts": 0,
        "status": Status.PENDING.value,
    }


def due_for_publish(now: datetime, grace_cutoff: datetime, stale_cutoff: datetime) -> Filter:
    """Open, unlocked (or lock-expired), due documents that need a (re)publish."""
    needs_publish = {
        "$or": [
            {  # due, and never published since it fell due (see AWAITING_PUBLISH)
                "status": {"$in": [Status.SCHEDULED.value, Status.RETRYING.value]},
                "$or": AWAITING_PUBLISH,
            },
            {
                "published_at": None,
                "status": Status.PENDING.value,
                "created_at": {"$lt": grace_cutoff},
            },
            {  # a lost wake-up: published long ago and never claimed since
                "published_at": {"$lt": stale_cutoff},
                "$or": [
                    {"lockedAt": None},
                    {"$expr": {"$lt": ["$lockedAt", "$published_at"]}},
                ],
            },
        ]
    }
    return {"status": {"$in": OPEN}, **unlocked(now), **due(now), **needs_publish}


def unchanged(doc: dict[str, Any]) -> Filter:
    """Compare-and-set guard: the document as read (``_id``, ``updated_at``, ``published_at``).

    Every write to a notification sets ``updated_at`` but the publish marks, which set
    ``published_at``; so a document that passes this guard still matches what it was read
    by, as long as that filter only grows with time (due, expired, past a cutoff).
    """
    return {
        "_id": doc["_id"],
        "updated_at": doc.get("updated_at"),
        "published_at": doc.get("published_at"),
    }


def swept_by(ids: list[str], write: str) -> Filter:
    """The documents that the sweeper write ``write`` changed (BulkWriteResult only counts
    matches; the write's own id tells which items took)."""
    return {"_id": {"$in": ids}, SWEEP_WRITE: write}


def final_before(floor: str, before: datetime) -> Filter:
    """Final documents made and last updated before ``before`` (``floor``: its id floor)."""
    return {
        "_id": {"$lt": floor},
        "status": {"$in": FINAL},
        "created_at": {"$lt": before},
        "updated_at": {"$lt": before},
    }


def expired_locks(now: datetime) -> Filter:
    return {"status": {"$in": OPEN}, "lockExpiry": {"$lt": now}, "lockedBy": {"$ne": None}}


def recover_filter(doc: dict[str, Any], now: datetime) -> Filter:
    """Guard for one expired lock: the same lock as read, still expired, still open."""
    return {
        "_id": doc["_id"],
        "status": {"$in": OPEN},
        "lockedBy": doc["lockedBy"],
        "lockExpiry": {"$eq": doc["lockExpiry"], "$lt": now},
    }


def recover_update(
    now: datetime, unknown: bool, fail: bool, error: dict[str, Any], write: str
) -> Pipeline:
    """Release a dead worker's lock; hold an unknown outcome as failed when ``fail``. Stamped
    with ``write``, the id of the sweeper call."""
    fields: dict[str, Any] = {"updated_at": literal(now), SWEEP_WRITE: literal(write)}
    unset = list(LOCK_FIELDS)
    if unknown:
        fields["history"] = mark_last_unknown()
    if unknown and fail:
        fields["status"] = literal(Status.FAILED.value)
        fields["last_error"] = literal(error)
        unset.append("next_attempt_at")
    else:
        fields["published_at"] = literal(now)
    return [{"$set": fields}, {"$unset": unset}]
