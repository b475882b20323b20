"""The MongoDB store's pure parts, which run without a server.

The document mapping (through real BSON encoding), the shape of the filters and pipeline
updates it sends, the write-concern choice and the error mapping. The store's behaviour
against a server is the contract suite's job (tests/store/test_contract_*.py, on the
MongoDB stand-in or NOTIFIER_TEST_MONGODB_URL's server); nothing here fakes MongoDB.
"""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)

from notifier.models import (
    Attempt,
    AttemptOutcome,
    Device,
    Lane,
    LastError,
    Notification,
    Platform,
    Priority,
    Status,
    Target,
    Wake,
)
from notifier.store.base import NotificationStore, Outcome, StoreUnavailable
from notifier.store.mongo import MongoStore
from notifier.store.mongo import queries as q
from notifier.store.mongo.client import (
    client_options,
    hosts,
    unavailable_on_network_errors,
    write_concern_for,
)
from notifier.store.mongo.documents import (
    bson_time,
    device_to_document,
    document_to_device,
    document_to_notification,
    notification_to_document,
    wake_of,
)

T0 = datetime(2026, 11, 22, 18, 0, 0, 123000, tzinfo=UTC)  # millisecond precision, like BSON
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


def through_bson(doc: dict[str, Any]) -> dict[str, Any]:
    """What the server would hand back for ``doc``: encoded and decoded as PyMongo does."""
    return bson.decode(bson.encode(doc), codec_options=CODEC)


def full_notification() -> Notification:
    return Notification(
        id="01935f3c-7b2a-7cde-8f00-0123456789ab",
        app="shop",
        target=Target(Platform.APNS, "a" * 64),
        created_at=T0,
        updated_at=T0 + timedelta(seconds=9),
        user_id="u1",
        title="Hi",
        body="text",
        data={"k": "v", "$dollar": "kept"},
        priority=Priority.NORMAL,
        lane=Lane.BULK,
        collapse_key="c1",
        ttl_seconds=3600,
        status=Status.RETRYING,
        scheduled_for=T0 + timedelta(minutes=1),
        next_attempt_at=T0 + timedelta(minutes=5),
        attempts=2,
        last_error=LastError(code="unavailable", message="503 from APNs", provider_status=503),
        locked_by="host-1-abc",
        locked_at=T0 + timedelta(seconds=8),
        lock_expiry=T0 + timedelta(minutes=5, seconds=8),
        published_at=T0 + timedelta(seconds=1),
        sent_at=T0 + timedelta(seconds=7),
        provider_message_id="projects/p/messages/1",
        idempotency_key="k1#2",
        request_fingerprint="sha256:abc",
        history=[
            Attempt(
                worker="host-1-abc",
                started_at=T0 + timedelta(seconds=2),
                finished_at=T0 + timedelta(seconds=3),
                outcome=AttemptOutcome.RETRY,
                provider_status=503,
            ),
            Attempt(worker="host-2-def", started_at=T0 + timedelta(seconds=8)),
        ],
    )


def minimal_notification() -> Notification:
    return Notification(
        id="01935f3c-7b2a-7cde-8f00-000000000001",
        app="shop",
        target=Target(Platform.FCM, "tok"),
        created_at=T0,
        updated_at=T0,
    )


# -- notification documents --------------------------------------------------------------------


def test_fully_populated_notification_survives_a_bson_round_trip() -> None:
    original = full_notification()
    assert document_to_notification(through_bson(notification_to_document(original))) == original


def test_document_uses_the_design_field_names() -> None:
    doc = notification_to_document(full_notification())
    assert doc["_id"] == full_notification().id
    assert doc["target"] == {"platform": "apns", "token": "a" * 64}
    assert doc["lockedBy"] == "host-1-abc"
    assert {"lockedAt", "lockExpiry", "published_at", "idempotency_key"} <= doc.keys()
    assert doc["last_error"] == {
        "code": "unavailable",
        "message": "503 from APNs",
        "provider_status": 503,
    }
    assert doc["history"][1] == {
        "worker": "host-2-def",
        "started_at": T0 + timedelta(seconds=8),
        "finished_at": None,
        "outcome": None,
        "provider_status": None,
    }
    assert "id" not in doc and "locked_by" not in doc


def test_none_fields_are_left_out_so_the_partial_key_index_skips_them() -> None:
    doc = notification_to_document(minimal_notification())
    assert set(doc) == {
        "_id",
        "app",
        "target",
        "data",
        "priority",
        "lane",
        "status",
        "attempts",
        "history",
        "created_at",
        "updated_at",
    }
    assert document_to_notification(through_bson(doc)) == minimal_notification()


def test_the_lane_is_stored_by_its_design_name_and_a_document_without_one_is_transactional() -> (
    None
):
    assert notification_to_document(full_notification())["lane"] == "bulk"
    assert notification_to_document(minimal_notification())["lane"] == "transactional"
    # stored before the lanes existed
    old = notification_to_document(full_notification())
    del old["lane"]
    assert document_to_notification(through_bson(old)).lane is Lane.TRANSACTIONAL
    assert wake_of({"_id": "x", "app": "shop"}) == Wake("x", "shop", Lane.TRANSACTIONAL)
    assert wake_of({"_id": "x", "app": "shop", "lane": "bulk"}) == Wake("x", "shop", Lane.BULK)


def test_stored_datetimes_come_back_aware_utc_at_millisecond_precision() -> None:
    n = minimal_notification()
    n.created_at = datetime(2026, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    back = document_to_notification(through_bson(notification_to_document(n)))
    assert back.created_at == bson_time(n.created_at)
    assert back.created_at.utcoffset() == timedelta(0)
    assert back.created_at.microsecond == 678000


def test_naive_datetimes_from_a_client_without_tz_aware_are_read_as_utc() -> None:
    doc = notification_to_document(minimal_notification())
    doc["created_at"] = T0.replace(tzinfo=None)
    assert document_to_notification(doc).created_at == T0


# -- device documents --------------------------------------------------------------------------


def test_device_round_trip_and_optional_reason() -> None:
    active = Device("shop", "tok", Platform.FCM, "u1", True, T0, T0)
    doc = device_to_document(active)
    assert "deactivated_reason" not in doc
    assert document_to_device(through_bson(doc)) == active
    dead = Device("shop", "tok", Platform.APNS, None, False, T0, T0, "Unregistered")
    assert document_to_device(through_bson(device_to_document(dead))) == dead


# -- filters and updates -----------------------------------------------------------------------


def test_idempotency_key_prefix_regex_matches_the_key_and_its_fan_out_only() -> None:
    pattern = q.key_prefix_regex("a.b+(c)")
    # PCRE's \z (absolute end) is Python's \Z.
    matches = re.compile(pattern.replace(r"\z", r"\Z")).search
    assert matches("a.b+(c)") and matches("a.b+(c)#1") and matches("a.b+(c)#u1#2")
    assert not matches("a.b+(c)x") and not matches("aXb+(c)") and not matches("za.b+(c)")
    assert not matches("a.b+(c)\n")


def test_every_filter_and_update_is_bson_encodable() -> None:
    outcome = Outcome(Status.SENT, AttemptOutcome.SENT, T0, 200, "m1")
    doc = {"_id": "x", "lockedBy": "w", "lockExpiry": T0}
    built: list[Any] = [
        q.claimable(["x", "y"], T0),
        q.claim_update("w", "lease", T0, T0, Attempt("w", T0).to_dict()),
        q.complete_update(outcome, "write"),
        q.due_for_publish(T0, T0, T0),
        q.unchanged({"_id": "x", "updated_at": T0}),
        q.swept_by(["x"], "write"),
        q.recover_filter(doc, T0),
        q.recover_update(T0, True, True, LastError("outcome_unknown", "m").to_dict(), "write"),
    ]
    for value in built:
        bson.encode({"v": value})


def test_pipeline_updates_keep_dollar_strings_literal() -> None:
    outcome = Outcome(
        Status.FAILED,
        AttemptOutcome.PERMANENT,
        T0,
        400,
        "$not_a_field",
        last_error=LastError("bad", "$also literal"),
    )
    set_stage = q.complete_update(outcome, "write")[0]["$set"]
    assert set_stage["provider_message_id"] == {"$literal": "$not_a_field"}
    assert set_stage["last_error"] == {
        "$literal": {"code": "bad", "message": "$also literal", "provider_status": None}
    }
    claim_set = q.claim_update("$w", "$l", T0, T0, {"worker": "$w"})[0]["$set"]
    assert claim_set["lockedBy"] == {"$literal": "$w"}
    assert claim_set[q.LEASE] == {"$literal": "$l"}


def test_complete_releases_the_lock_and_retrying_clears_published_at() -> None:
    retry = Outcome(Status.RETRYING, AttemptOutcome.RETRY, T0, 503, next_attempt_at=T0)
    set_stage, unset_stage = q.complete_update(retry, "write")
    assert set_stage["$set"]["next_attempt_at"] == {"$literal": T0}
    assert set(unset_stage["$unset"]) == {
        "lockedBy",
        "lockedAt",
        "lockExpiry",
        q.LEASE,
        "published_at",
    }
    sent_set, sent_unset = q.complete_update(
        Outcome(Status.SENT, AttemptOutcome.SENT, T0, 200), "write"
    )
    assert sent_set["$set"]["sent_at"] == {"$literal": T0}
    assert "published_at" not in sent_unset["$unset"]
    assert "next_attempt_at" in sent_unset["$unset"]


def test_recover_holds_an_unknown_outcome_as_failed_only_under_the_fail_policy() -> None:
    error = LastError("outcome_unknown", "m").to_dict()
    failed = q.recover_update(T0, True, True, error, "w")[0]["$set"]
    assert failed["status"] == {"$literal": "failed"} and "published_at" not in failed
    resend = q.recover_update(T0, True, False, error, "w")[0]["$set"]
    assert resend["published_at"] == {"$literal": T0} and "status" not in resend
    assert "history" in resend
    clean = q.recover_update(T0, False, True, error, "w")[0]["$set"]
    assert "history" not in clean and clean["published_at"] == {"$literal": T0}


def test_sweeper_take_is_a_compare_and_set_on_the_document_as_read() -> None:
    guard = q.unchanged({"_id": "x", "updated_at": T0, "history": []})
    # published_at absent when read: the guard asks for it still absent (null matches absent)
    assert guard == {"_id": "x", "updated_at": T0, "published_at": None}


def test_claim_filters_are_plain_field_conjunctions() -> None:
    """No $or or $expr beside the _id $in: a planner serves it from the _id index."""
    for f in (q.claimable(["x"], T0), q.unchanged({"_id": "x"}), q.swept_by(["x"], "w")):
        assert not {"$or", "$expr", "$and"} & set(f)


def test_idempotency_index_is_unique_and_partial_on_string_keys() -> None:
    spec = next(
        i.document for i in q.NOTIFICATION_INDEXES if i.document["name"] == "app_idempotency_key"
    )
    assert spec["unique"] is True
    assert spec["partialFilterExpression"] == {"idempotency_key": {"$type": "string"}}
    assert "sparse" not in spec
    keys = {tuple(i.document["key"]) for i in q.NOTIFICATION_INDEXES}
    assert {("status", "next_attempt_at"), ("status", "lockExpiry"), ("target.token",)} <= keys
    assert {("user_id", "created_at"), ("app", "_id")} <= keys


def test_the_bulk_apps_index_holds_open_bulk_documents_and_answers_the_whole_filter() -> None:
    """Partial on bulk_apps' own filter (MongoDB uses a partial index only for a query that
    implies its filter); every field of that filter in the key, so no fetch is needed."""
    spec = next(i.document for i in q.NOTIFICATION_INDEXES if i.document["name"] == "open_bulk_app")
    assert spec["partialFilterExpression"] == q.OPEN_BULK
    assert q.OPEN_BULK == {"lane": "bulk", "status": {"$in": ["pending", "retrying", "scheduled"]}}
    assert list(spec["key"]) == ["lane", "status", "app"]


# -- connection --------------------------------------------------------------------------------


def test_write_concern_is_majority_on_replica_sets_and_journaled_on_a_standalone() -> None:
    assert write_concern_for({"setName": "rs0"}).document == {"w": "majority"}
    assert write_concern_for({"msg": "isdbgrid"}).document == {"w": "majority"}
    assert write_concern_for({"isWritablePrimary": True}).document == {"w": 1, "j": True}


def test_url_options_win_over_the_defaults() -> None:
    options = client_options("mongodb://h/db?servertimeoutms=1&ServerSelectionTimeoutMS=50")
    assert "serverSelectionTimeoutMS" not in options
    assert options["timeoutMS"] == 10_000 and options["connectTimeoutMS"] == 10_000
    assert options["tz_aware"] is True and options["tzinfo"] is UTC


def test_hosts_hide_credentials() -> None:
    assert hosts("mongodb://user:s3cret@h1:27017,h2/db?replicaSet=rs") == "h1:27017,h2"


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("no server"),
        NetworkTimeout("slow"),
        AutoReconnect("reset"),
        ExecutionTimeout("maxTimeMS", 50),
    ],
)
def test_network_errors_and_timeouts_become_store_unavailable(error: Exception) -> None:
    with pytest.raises(StoreUnavailable), unavailable_on_network_errors():
        raise error


def test_other_pymongo_errors_pass_through() -> None:
    with pytest.raises(DuplicateKeyError), unavailable_on_network_errors():
        raise DuplicateKeyError("E11000", 11000)


async def test_connect_to_nothing_is_store_unavailable_without_the_password() -> None:
    url = "mongodb://user:s3cret@127.0.0.1:9/notifier?timeoutMS=300"
    with pytest.raises(StoreUnavailable) as info:
        await MongoStore.connect(url)
    assert "s3cret" not in str(info.value) and "127.0.0.1:9" in str(info.value)


async def test_a_closed_store_is_store_unavailable() -> None:
    """PyMongo raises InvalidOperation on a closed client; the contract says unavailable."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9/?timeoutMS=300", connect=False
    )
    store = MongoStore(client, client["notifier"])
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("01900000-0000-7000-8000-000000000000")
    with pytest.raises(StoreUnavailable):
        await store.get_device("a", "t")


def test_mongo_store_has_every_protocol_method_with_the_same_parameters() -> None:
    assert MongoStore.kind == "mongodb"
    for name, member in inspect.getmembers(NotificationStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(MongoStore, name))
        assert list(ours.parameters) == list(inspect.signature(member).parameters), name
