"""MongoDB's documented behaviour that the store relies on, checked on the test server.

Each test cites the MongoDB manual page it follows. Where the MongoDB-compatible stand-in
(SecantusDB) does otherwise, the test still asserts MongoDB's behaviour and is marked
expected to fail on the stand-in only (``server.deviation``), naming the difference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import WriteConcern
from pymongo.errors import BulkWriteError, OperationFailure

from notifier.store.mongo import queries as q
from notifier.store.mongo.client import write_concern_for
from tests.store.mongo.conftest import Server

DUPLICATE_KEY = 11000


async def test_a_null_query_matches_a_missing_field(server: Server) -> None:
    """https://www.mongodb.com/docs/manual/tutorial/query-for-null-fields/ : ``{f: null}``
    matches documents whose ``f`` is null or absent. ``unlocked`` and ``due`` rely on it
    (the store leaves None fields out of its documents)."""
    col = server.db["c"]
    await col.insert_many([{"_id": 1, "f": None}, {"_id": 2}, {"_id": 3, "f": 5}])
    assert sorted(await col.distinct("_id", {"f": None})) == [1, 2]


async def test_the_partial_unique_key_index_ignores_keyless_documents(server: Server) -> None:
    """https://www.mongodb.com/docs/manual/core/index-partial/ (a partial unique index
    enforces uniqueness only on the documents it indexes) and
    https://www.mongodb.com/docs/manual/reference/method/db.collection.insertMany/ (an
    unordered insert goes on after an error and reports each one with its index)."""
    col = server.db["notifications"]
    await col.create_indexes(q.NOTIFICATION_INDEXES)
    await col.insert_many([{"_id": "a", "app": "x"}, {"_id": "b", "app": "x"}])
    docs = [
        {"_id": "c", "app": "x", "idempotency_key": "k"},
        {"_id": "d", "app": "x", "idempotency_key": "k"},
        {"_id": "e", "app": "y", "idempotency_key": "k"},
    ]
    with pytest.raises(BulkWriteError) as info:
        await col.insert_many(docs, ordered=False)
    errors = info.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(1, DUPLICATE_KEY)]
    assert info.value.details["nInserted"] == 2


async def test_a_find_with_a_limit_answers_in_its_first_reply(server: Server) -> None:
    """https://www.mongodb.com/docs/manual/reference/command/find/ : the reply's cursor id
    is 0 when the cursor is closed; a reached limit closes it. ``in_one_reply`` relies on
    it so that a claim's read is one round trip, however many ids."""
    col = server.db["c"]
    await col.insert_many([{"_id": i} for i in range(150)])
    ids = list(range(120))
    reply = await server.db.command(
        {"find": "c", "filter": {"_id": {"$in": ids}}, "limit": 120, "batchSize": 120}
    )
    assert reply["cursor"]["id"] == 0
    assert len(reply["cursor"]["firstBatch"]) == 120


async def test_less_than_is_false_for_two_missing_fields(
    server: Server,
) -> None:
    """https://www.mongodb.com/docs/manual/reference/operator/aggregation/lt/ compares by
    https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/ ; two missing
    values are equal, so neither is less than the other. The sweeper's lost-wake-up test
    (``$expr: {$lt: [$lockedAt, $published_at]}``) compares fields that may be missing."""
    col = server.db["c"]
    await col.insert_many([{"_id": 1}, {"_id": 2, "b": 1}])
    matched = await col.distinct("_id", {"$expr": {"$lt": ["$a", "$b"]}})
    assert matched == [2]  # missing < 1; but missing < missing is false


async def test_a_standalone_server_refuses_transactions(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """https://www.mongodb.com/docs/manual/core/transactions-production-consideration/ :
    multi-document transactions need a replica set or a sharded cluster. The store uses
    none (each race is settled by one conditional single-document write), so it runs on a
    standalone server; this pins why it must keep it that way."""
    if not server.standalone:
        pytest.skip("the test server is a replica set or a mongos")
    server.deviation(request, "a standalone SecantusDB commits multi-document transactions")
    col = server.db["c"]
    await col.insert_one({"_id": 0})  # the collection exists before the transaction
    with pytest.raises(OperationFailure):
        async with server.client.start_session() as session, await session.start_transaction():
            await col.insert_one({"_id": 1}, session=session)


async def test_the_store_write_concern_is_journaled_on_this_server(server: Server) -> None:
    """https://www.mongodb.com/docs/manual/reference/write-concern/#acknowledgment-behavior :
    on a standalone server ``w: 1, j: true`` is acknowledged once the write is in the
    on-disk journal (``w: 1`` alone: once in memory); ``majority`` on a replica set."""
    hello: dict[str, Any] = await server.client.admin.command("hello")
    concern = write_concern_for(hello)
    expected = WriteConcern(w=1, j=True) if server.standalone else WriteConcern(w="majority")
    assert concern == expected
    result = await server.db.get_collection("c", write_concern=concern).insert_one({"_id": 1})
    assert result.acknowledged


def _stages(plan: dict[str, Any]) -> list[str]:
    """The stage names of a winning plan, outermost first."""
    stages = [str(plan.get("stage"))]
    for child in (plan.get("inputStage"), *plan.get("inputStages", ())):
        if child:
            stages += _stages(child)
    return stages


async def test_a_claim_filter_reads_by_the_id_index(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """https://www.mongodb.com/docs/manual/core/query-plans/ : the planner chooses among
    plans on the indexes that can serve a predicate, and the ``_id`` index serves
    ``{_id: {$in: ids}}`` whatever else the filter holds; a collection scan is the plan of
    a query no index serves (https://www.mongodb.com/docs/manual/reference/explain-results/).
    A claim's cost then does not grow with the collection."""
    server.deviation(
        request,
        "explain names COLLSCAN for an _id $in beside other field predicates (though its cost"
        " stays flat as the collection grows; beside an $or or $expr it is a real scan)",
    )
    col = server.db["notifications"]
    await col.create_indexes(q.NOTIFICATION_INDEXES)
    await col.insert_many([{"_id": str(i), "status": "pending"} for i in range(50)])
    now = datetime.now(UTC)
    explained = await col.find(q.claimable(["1", "2"], now)).explain()
    assert "COLLSCAN" not in _stages(explained["queryPlanner"]["winningPlan"])


def _plan_stages(plan: Any) -> list[tuple[str, str | None]]:
    """Every (stage, index name) in an explain's plan tree, whatever its nesting
    (``inputStage``, ``inputStages``, or the ``queryPlan`` of newer servers)."""
    found: list[tuple[str, str | None]] = []
    if isinstance(plan, dict):
        if "stage" in plan:
            found.append((str(plan["stage"]), plan.get("indexName")))
        for value in plan.values():
            found += _plan_stages(value)
    elif isinstance(plan, list):
        for value in plan:
            found += _plan_stages(value)
    return found


async def test_bulk_apps_is_a_distinct_scan_of_the_open_bulk_index(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """https://www.mongodb.com/docs/manual/core/index-partial/ : a partial index serves a
    query whose filter implies the index's; and
    https://www.mongodb.com/docs/manual/reference/explain-results/ : a DISTINCT_SCAN reads
    one key per distinct value. bulk_apps (every worker, every few seconds) then costs one
    key per app, not one per queued bulk notification."""
    server.deviation(request, "distinct scans the collection (no DISTINCT_SCAN, no index)")
    col = server.db["notifications"]
    await col.create_indexes(q.NOTIFICATION_INDEXES)
    statuses = ["pending", "retrying", "scheduled", "sent"]
    await col.insert_many(
        [
            {"_id": str(i), "app": f"app{i % 3}", "lane": "bulk", "status": statuses[i % 4]}
            for i in range(300)
        ]
    )
    explained = await server.db.command(
        {"explain": {"distinct": "notifications", "key": "app", "query": q.OPEN_BULK}}
    )
    stages = _plan_stages(explained["queryPlanner"]["winningPlan"])
    assert ("DISTINCT_SCAN", "open_bulk_app") in stages, stages
    assert "COLLSCAN" not in {stage for stage, _ in stages}, stages


async def test_a_page_of_failed_notifications_is_read_from_the_unsent_final_index(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """https://www.mongodb.com/docs/manual/core/index-partial/ : a partial index serves a
    query whose filter implies the index's (``status: "failed"`` implies ``status $in
    [cancelled, expired, failed]``). list_notifications' page of one rare final status then
    reads that page, not every sent document of the app (issue 17)."""
    server.deviation(request, "plans this find as a collection scan and a sort, no index")
    col = server.db["notifications"]
    await col.create_indexes(q.NOTIFICATION_INDEXES)
    await col.insert_many(
        [
            {"_id": f"{i:06d}", "app": "a", "status": "failed" if i % 50 == 0 else "sent"}
            for i in range(2000)
        ]
    )
    cursor = col.find({"app": "a", "status": "failed"}).sort("_id", -1).limit(5)
    explained = await cursor.explain()
    stages = _plan_stages(explained["queryPlanner"]["winningPlan"])
    assert ("IXSCAN", "app_id_unsent_final") in stages, stages
