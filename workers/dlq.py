"""``notifier dlq list|replay``: inspect and replay the dead-letter queue.

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

from notifier.broker import Broker, BrokerUnavailable, decode, existing_queue
from notifier.models import OPEN_STATUSES, utcnow
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
        cmd.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
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
            async with existing_queue(broker.connection, settings.dead_letter_queue) as queue:
                if args.command == "list":
                    return await _list(queue, store, args.limit, args.json)
                return await _replay(queue, store, broker, args.limit)
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


async def _list(queue: AbstractQueue, store: NotificationStore, limit: int, as_json: bool) -> int:
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
    print(f"{len(held)} dead-lettered message(s) listed", file=sys.stderr)
    return 0


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
) -> int:
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
        f"{len(kept)} unreadable left in the queue",
        file=sys.stderr,
    )
    return 0


async def _replay_one(notification_id: str, store: NotificationStore, broker: Broker) -> str:
    """Reopen and publish one notification; the caller then removes its DLQ message."""
    if await store.reopen(notification_id, utcnow()):
        action = "replayed"
    else:
        stored = await store.get(notification_id)
        if stored is None:
            return "missing"
        if stored.status not in OPEN_STATUSES:
            return f"already_{stored.status.value}"
        action = "republished"  # still open (a dead-lettered wake-up): just wake it again
    try:
        await broker.publish([notification_id])
    except BrokerUnavailable:
        # pending and unpublished: the sweeper publishes it after its grace period
        await store.unmark_published([notification_id])
        raise
    return action
