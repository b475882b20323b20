"""``notifier dlq list|replay``: inspect and replay the dead-letter queues.

Each lane has its own dead-letter queue; both are read (transactional first) unless
``--lane`` names one, ``--limit`` messages from each.

``list`` reads up to ``--limit`` messages without consuming them (``basic.get`` without
ack, then every one is requeued) and prints each id with its reason and the stored
notification's ``last_error``. ``replay`` resets each failed/expired notification to
``pending`` (attempts and history kept, see ``NotificationStore.reopen``), republishes it,
and only then removes its message from the dead-letter queue. A work message the broker
dead-lettered may carry several ids: each is listed, and all are replayed before it is
removed. Unreadable (garbage) messages are left in place and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from notifier.broker import Broker, BrokerUnavailable, dead_queue_for, decode, existing_queue
from notifier.models import OPEN_STATUSES, Lane, utcnow
from notifier.settings import Settings
from notifier.store.base import NotificationStore, StoreUnavailable
from notifier.store.factory import open_store

GET_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DeadEntry:
    id: str | None  # None for an unreadable message
    reason: str
    last_error: dict[str, Any] | None
    status: str | None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notifier dlq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "print dead-lettered ids"), ("replay", "replay them")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--limit", type=int, default=100, help="at most this many a lane (default 100)"
        )
        cmd.add_argument(
            "--lane", choices=[lane.value for lane in Lane], help="only this lane's (default both)"
        )
        if name == "list":
            cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def main(settings: Settings, argv: list[str]) -> int:
    """Entry point of ``notifier dlq``; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.limit < 1:
        print("notifier dlq: --limit must be >= 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings, args))
    except (BrokerUnavailable, StoreUnavailable) as exc:
        print(f"notifier dlq: {exc}", file=sys.stderr)
        return 1


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    store = await open_store(settings)
    try:
        broker = await Broker.connect(settings)
        try:
            lanes = [Lane(args.lane)] if args.lane else list(Lane)
            for lane in lanes:
                name = dead_queue_for(settings, lane)
                async with existing_queue(broker.connection, name) as queue:
                    if args.command == "list":
                        await _list(queue, store, args.limit, args.json)
                    else:
                        await _replay(queue, store, broker, args.limit)
            return 0
        finally:
            await broker.close()
    finally:
        await store.close()


def _reason(message: AbstractIncomingMessage) -> str:
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return str(body["reason"])
    death = (message.headers or {}).get("x-first-death-reason")
    if isinstance(death, bytes):
        death = death.decode(errors="replace")
    return f"broker:{death}" if isinstance(death, str) and death else "unknown"


async def _entries(message: AbstractIncomingMessage, store: NotificationStore) -> list[DeadEntry]:
    ids = decode(message.body)
    reason = _reason(message)
    if ids is None:
        return [DeadEntry(None, reason, None, None)]
    entries = []
    for notification_id in ids:
        stored = await store.get(notification_id)
        error = stored.last_error.to_dict() if stored and stored.last_error else None
        status = stored.status.value if stored else None
        entries.append(DeadEntry(notification_id, reason, error, status))
    return entries


async def _get(queue: AbstractQueue) -> AbstractIncomingMessage | None:
    return await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_SECONDS)


async def _list(queue: AbstractQueue, store: NotificationStore, limit: int, as_json: bool) -> None:
    held: list[AbstractIncomingMessage] = []
    try:
        for _ in range(limit):
            message = await _get(queue)
            if message is None:
                break
            held.append(message)
            for entry in await _entries(message, store):
                print(_format(entry, as_json))
    finally:
        for message in held:  # nothing is consumed by a list
            await message.nack(requeue=True)
    print(f"{len(held)} dead-lettered message(s) listed from {queue.name}", file=sys.stderr)


def _format(entry: DeadEntry, as_json: bool) -> str:
    if as_json:
        return orjson.dumps(
            {
                "id": entry.id,
                "reason": entry.reason,
                "status": entry.status,
                "last_error": entry.last_error,
            }
        ).decode()
    error = entry.last_error or {}
    detail = f"{error.get('code')}: {error.get('message')}" if error else "-"
    return f"{entry.id or '(unreadable)'}\t{entry.reason}\t{entry.status or '-'}\t{detail}"


async def _replay(
    queue: AbstractQueue, store: NotificationStore, broker: Broker, limit: int
) -> None:
    kept: list[AbstractIncomingMessage] = []
    replayed = dropped = 0
    try:
        for _ in range(limit):
            message = await _get(queue)
            if message is None:
                break
            ids = decode(message.body)
            if ids is None:
                kept.append(message)
                continue
            for notification_id in ids:
                action = await _replay_one(notification_id, store, broker)
                print(f"{action}\t{notification_id}")
                replayed += action in ("replayed", "republished")
                dropped += action not in ("replayed", "republished")
            await message.ack()
    finally:
        for message in kept:
            await message.nack(requeue=True)
    print(
        f"{replayed} replayed, {dropped} dropped (already final or missing), "
        f"{len(kept)} unreadable left in {queue.name}",
        file=sys.stderr,
    )


async def _replay_one(notification_id: str, store: NotificationStore, broker: Broker) -> str:
    """Reopen and publish one notification; the caller then removes its DLQ message."""
    action = "replayed" if await store.reopen(notification_id, utcnow()) else "republished"
    stored = await store.get(notification_id)  # its lane and app name the queue
    if stored is None:
        return "missing"
    if stored.status not in OPEN_STATUSES:
        return f"already_{stored.status.value}"
    # republished: still open (a dead-lettered wake-up), just wake it again
    try:
        await broker.publish_wakes([stored.wake])
    except BrokerUnavailable:
        # pending and unpublished: the sweeper publishes it after its grace period
        await store.unmark_published([notification_id])
        raise
    return action
