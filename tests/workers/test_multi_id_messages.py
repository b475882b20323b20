"""Work messages carrying several ids: the format, and a worker delivering them.

A message is acked only after every id in it has its outcome stored; a redelivered (or
duplicated) message re-claims only what is still open, so nothing is pushed twice.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from notifier.broker import IDS_PER_MESSAGE, Broker, decode, encode, encode_ids, existing_queue
from notifier.models import Status
from notifier.store.base import NotificationStore
from tests.support import wait_for
from tests.workers.conftest import WorkerPool, insert_and_publish, make_notification, wait_final


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        (encode("a"), ["a"]),
        (encode("a", reason="max_attempts"), ["a"]),
        (encode_ids(["a", "b", "a"]), ["a", "b"]),
        (b'{"ids": ["x"], "id": "y"}', ["x"]),
        (b"\x00\xffnot json", None),
        (b"[]", None),
        (b'{"no": "id"}', None),
        (b'{"id": ""}', None),
        (b'{"id": 7}', None),
        (b'{"ids": []}', None),
        (b'{"ids": "a"}', None),
        (b'{"ids": ["a", 1]}', None),
        (b'{"ids": ["a", ""]}', None),
    ],
)
def test_decode_reads_both_forms_and_rejects_garbage(body: bytes, ids: list[str] | None) -> None:
    assert decode(body) == ids


async def _work_messages(broker: Broker) -> list[list[str] | None]:
    async with existing_queue(broker.connection, broker.settings.queue) as queue:
        found: list[list[str] | None] = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(decode(message.body))
        return found


async def test_publish_packs_ids_into_messages(broker: Broker) -> None:
    ids = [f"id-{i}" for i in range(IDS_PER_MESSAGE * 2 + 3)]
    await broker.publish(ids)
    messages = await _work_messages(broker)
    assert [len(m or []) for m in messages] == [IDS_PER_MESSAGE, IDS_PER_MESSAGE, 3]
    assert [i for m in messages for i in m or []] == ids


async def test_multi_id_and_old_messages_deliver_each_open_id_once(
    workers: WorkerPool, store: NotificationStore, broker: Broker, emulator: Any
) -> None:
    notes = [make_notification() for _ in range(30)]
    ids = await insert_and_publish(store, None, notes)
    bodies = [encode_ids(ids[:20]), encode_ids(ids[10:30]), encode(ids[29])]  # overlapping
    bodies += [orjson.dumps({"ids": [ids[0], "0190000f-0000-7000-8000-000000000000"]})]
    for body in bodies:
        await broker.publish_body(body)
    proc = await workers.start(concurrency=8)  # smaller than a message: delivered in parts
    final = await wait_final(store, ids, timeout=30)
    assert {n.status for n in final.values()} == {Status.SENT}
    assert all(n.attempts == 1 for n in final.values())
    everything = await emulator.control.deliveries()
    assert {nid: everything[nid][0] for nid in ids} == dict.fromkeys(ids, 1)

    async def all_processed() -> bool:
        return bool((await proc.stats())["processed"] >= 30 + 13)

    await wait_for(all_processed, timeout=10, what="every id of every message processed")
    stats = await proc.stats()
    assert stats["processed"] == 30 + 13
    assert stats["sent"] == 30
    assert stats["duplicates_suppressed"] == 10 + 1 + 2  # overlap, the old form, ids[0]+missing
