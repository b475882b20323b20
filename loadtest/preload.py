"""``notifier bench --preload N``: fill the store with N final notifications of realistic shape.

What a store holds after a month at about 1M notifications a day, so that the bench, the
API and the sweeper can be measured against a grown table (issue 17). Every document is
final (no worker or sweeper will touch it): mostly ``sent``, some ``failed`` (dead tokens,
permanent refusals, retries run out), some ``expired`` and ``cancelled``; several apps of
different sizes; both platforms and both lanes; created over the past ``--preload-days``
(30), oldest first, with UUIDv7 ids of their creation time (the order the API gives them);
titles, bodies and data of a few hundred bytes, one to five attempts of history.

PostgreSQL gets them through ``COPY`` (binary, asyncpg's ``copy_records_to_table``) in
batches, then ``VACUUM (ANALYZE)`` so the table's statistics and visibility map are those
of a table that has aged rather than one just loaded; MongoDB through unordered
``insert_many`` batches. The documents are built by :class:`Notification` and the stores'
own mappings, so their shape is exactly what the API and the workers write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from notifier.models import (
    AttemptOutcome,
    Notification,
    Status,
    utcnow,
)
from notifier.store.postgres import sql as pg_sql

BATCH = 20_000
# documents an insert_many: the store's client gives a command 10 s, and the stand-in takes
# about that for 5,000
MONGO_BATCH = 1_000
DEFAULT_DAYS = 30.0
# apps of different sizes, as several upstream products sharing one pipeline
APPS = (("shop", 40), ("chat", 25), ("bank", 12), ("news", 10), ("games", 8), ("health", 5))
# (status, share in 1,000): what a month of deliveries leaves behind
STATUS_MIX = ((Status.SENT, 900), (Status.FAILED, 60), (Status.EXPIRED, 30), (Status.CANCELLED, 10))
USERS = 2_000_000
WORKERS = tuple(f"worker-{h}-{p}-{r:06x}" for h in "ab" for p in (101, 202) for r in (7, 9))
TITLES = (
    "Your order has shipped",
    "New message from Alex",
    "Payment received",
    "Breaking: markets close higher",
    "Your daily reward is ready",
    "Time for your check-in",
)
BODY = (
    "Tap to see the details in the app. This notification was generated for a load test "
    "and carries about as much text as a real one does. "
)
COPY_COLUMNS = (*pg_sql.INSERT_COLUMNS, "sent_at", "provider_message_id")


def _weighted(pairs: tuple[tuple[Any, int], ...]) -> list[Any]:
    return [value for value, weight in pairs for _ in range(weight)]


_APP_POOL = _weighted(APPS)
_STATUS_POOL = _weighted(STATUS_MIX)


_ERRORS = {
    AttemptOutcome.EXPIRED: '{"code":"expired","message":"ttl passed before delivery",'
    '"provider_status":null}',
    AttemptOutcome.TOKEN_DEAD: '{"code":"token_dead","message":"the device token is no longer '
    'valid","provider_status":410}',
    AttemptOutcome.PERMANENT: '{"code":"permanent","message":"the provider refused the payload",'
    '"provider_status":400}',
}
_MS = timedelta(milliseconds=1)


def fast_records(
    first: int, count: int, *, start: datetime, step: timedelta, rnd: random.Random
) -> list[tuple[Any, ...]]:
    """COPY records (order of COPY_COLUMNS; jsonb as text) of the notifications ``first``
    .. ``first + count - 1``, the ``i``-th created at ``start + i * step``: built straight
    as tuples, without the domain objects (a few times faster). The row a record stands
    for reads back as a final Notification (:func:`notification_of_record`)."""
    out: list[tuple[Any, ...]] = []
    append = out.append
    bits = rnd.getrandbits
    rand = rnd.random
    choice = rnd.choice
    statuses, apps, workers, titles = _STATUS_POOL, _APP_POOL, WORKERS, TITLES
    for i in range(first, first + count):
        created = start + step * i
        ms = int(created.timestamp() * 1000)
        status = choice(statuses)
        apns = i % 2 == 1
        bulk = rand() < 0.7
        started = created + _MS * (5 + (bits(9) % 395))
        finished = started + _MS * (2 + (bits(7) % 78))
        error = None
        message_id = None
        sent_at = None
        if status is Status.CANCELLED:
            attempts, history, finished = 0, "[]", created + timedelta(minutes=5)
        else:
            if status is Status.SENT:
                outcome, provider_status = AttemptOutcome.SENT, "200"
                message_id = f"projects/p/messages/{bits(63)}"
                sent_at = finished
            elif status is Status.EXPIRED:
                outcome, provider_status = AttemptOutcome.EXPIRED, "0"
            elif rand() < 0.7:
                outcome, provider_status = AttemptOutcome.TOKEN_DEAD, "410"
            else:
                outcome, provider_status = AttemptOutcome.PERMANENT, "400"
            error = _ERRORS.get(outcome)
            attempts = 1
            history = (
                f'[{{"worker":"{choice(workers)}","started_at":"{started.isoformat()}",'
                f'"finished_at":"{finished.isoformat()}","outcome":"{outcome.value}",'
                f'"provider_status":{provider_status}}}]'
            )
        token = f"{bits(256):064x}" if apns else f"f{bits(64):016x}:APA91b{bits(540):0135x}"
        append(
            (
                f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | bits(12):04x}-"
                f"{0x8000 | bits(14):04x}-{bits(48):012x}",
                choice(apps),
                f"user-{bits(21) % USERS}",
                "apns" if apns else "fcm",
                token,
                choice(titles),
                f"{BODY}Reference {bits(40):010x}.",
                f'{{"campaign":"c{i % 997}","screen":"detail","ref":"{bits(64):016x}"}}',
                "normal" if bulk else "high",
                "bulk" if bulk else "transactional",
                None,
                86_400 if bulk else 3_600,
                status.value,
                None,
                None,
                attempts,
                error,
                created + _MS * 3,
                None,
                None,
                history,
                created,
                finished,
                None,
                sent_at,
                message_id,
            )
        )
    return out


def _record_batches(count: int, days: float, seed: int) -> Iterator[list[tuple[Any, ...]]]:
    """COPY records of ``count`` notifications created evenly over the ``days`` before now,
    oldest first, never within the last hour (nothing looks recent)."""
    rnd = random.Random(seed)
    end = utcnow() - timedelta(hours=1)
    span = timedelta(days=days) - timedelta(hours=1)
    step = span / max(1, count)
    start = end - span
    for first in range(0, count, BATCH):
        yield fast_records(first, min(BATCH, count - first), start=start, step=step, rnd=rnd)


# Indexes over every row that the load drops and rebuilds: building one from a sort of the
# loaded table costs a fraction of 10M random insertions into it (a token or user id lands
# anywhere). The primary key (ids in creation order: appends) and the partial indexes
# (final rows are not in them) stay. Rebuilt by the schema's own CREATE INDEX IF NOT EXISTS.
REBUILT_INDEXES = (
    "notifications_user_created",
    "notifications_target_token",
    "notifications_app_id",
)


async def _rebuild_indexes(conn: Any, say: Callable[[str], None]) -> None:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", pg_sql.SETUP_LOCK_KEY)
        await conn.execute(pg_sql.SCHEMA, timeout=None)
    say(f"preload: indexes rebuilt in {time.perf_counter() - start:.1f} s")


async def preload_postgres(
    url: str, count: int, *, days: float, seed: int, say: Callable[[str], None], vacuum: bool
) -> float:
    """COPY ``count`` rows into the (set-up) notifications table; the rows/s of the load.

    The indexes over every row are dropped for the load and rebuilt after it: do not run it
    while the pipeline serves traffic."""
    import asyncpg

    from notifier.store.postgres import PostgresStore

    store = await PostgresStore.connect(url)
    try:
        await store.setup()  # the schema as api and worker create it
    finally:
        await store.close()
    conn = await asyncpg.connect(url)  # no jsonb codec: the text goes as it is
    try:
        await conn.execute("SET synchronous_commit = off")
        for name in REBUILT_INDEXES:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
        start = time.perf_counter()
        done = 0
        batches = _record_batches(count, days, seed)

        def next_records() -> list[tuple[Any, ...]] | None:
            return next(batches, None)

        # the next batch is built in a thread while PostgreSQL takes the last one
        records = await asyncio.to_thread(next_records)
        while records is not None:
            building = asyncio.create_task(asyncio.to_thread(next_records))
            await conn.copy_records_to_table(
                "notifications", records=records, columns=list(COPY_COLUMNS), timeout=None
            )
            done += len(records)
            if done % (BATCH * 25) == 0:
                say(f"preload: {done:,} rows, {done / (time.perf_counter() - start):,.0f} rows/s")
            records = await building
        seconds = time.perf_counter() - start
        await _rebuild_indexes(conn, say)
        total = time.perf_counter() - start
        rate = count / total if total else 0.0
        say(
            f"preload: COPY of {count:,} rows in {seconds:.1f} s ({count / seconds:,.0f} rows/s), "
            f"with the index rebuild {total:.1f} s: {rate:,.0f} rows/s"
        )
        if vacuum:
            start = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) notifications", timeout=None)
            say(f"preload: VACUUM (ANALYZE) in {time.perf_counter() - start:.1f} s")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('notifications'))")
        rows = await conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'notifications'"
        )
        say(f"preload: notifications now ~{rows:,} rows, {size} with its indexes")
        return rate
    finally:
        await conn.close()


def notification_of_record(record: tuple[Any, ...]) -> Notification:
    """The :class:`Notification` a COPY record stands for (as PostgreSQL would read it)."""
    from notifier.store.postgres.rows import notification_from_row

    row = dict(zip(COPY_COLUMNS, record, strict=True))
    for column in ("data", "last_error", "history"):
        row[column] = orjson.loads(row[column]) if row[column] is not None else None
    for column in ("locked_by", "locked_at", "lock_expiry"):
        row[column] = None
    return notification_from_row(row)


async def preload_mongo(
    url: str, count: int, *, days: float, seed: int, say: Callable[[str], None]
) -> float:
    """Unordered insert_many batches into the notifications collection; the documents/s."""
    from notifier.store.mongo import MongoStore  # type: ignore[import-not-found,unused-ignore]
    from notifier.store.mongo.documents import notification_to_document

    store = await MongoStore.connect(url)
    try:
        await store.setup()
        collection = store._notifications  # a tool beside the store: its own mapping
        start = time.perf_counter()
        done = 0
        for records in _record_batches(count, days, seed):
            docs = [notification_to_document(notification_of_record(r)) for r in records]
            for i in range(0, len(docs), MONGO_BATCH):
                await collection.insert_many(docs[i : i + MONGO_BATCH], ordered=False)
            done += len(docs)
            if done % (BATCH * 5) == 0:
                say(f"preload: {done:,} documents, {done / (time.perf_counter() - start):,.0f}/s")
        seconds = time.perf_counter() - start
        rate = count / seconds if seconds else 0.0
        say(f"preload: insert_many of {count:,} documents in {seconds:.1f} s: {rate:,.0f}/s")
        return rate
    finally:
        await store.close()


async def preload(
    url: str,
    count: int,
    *,
    days: float = DEFAULT_DAYS,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    vacuum: bool = True,
) -> float:
    """Preload ``count`` final notifications into the store at ``url``; the load's rate."""
    seed = seed if seed is not None else int(datetime.now(UTC).timestamp() * 1000)
    if url.startswith(("postgresql://", "postgres://")):
        return await preload_postgres(url, count, days=days, seed=seed, say=say, vacuum=vacuum)
    return await preload_mongo(url, count, days=days, seed=seed, say=say)
