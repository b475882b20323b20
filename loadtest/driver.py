"""The moving parts of a bench run: submit through nginx, kill workers, wait for the drain.

Submission posts batches to ``/v1/notifications/batch`` (or single notifications when the
batch size is 1), paced to ``--rate`` when given. Only 429 answers are retried: nothing was
stored for them. Any other failure (nginx answers 503 for an upstream timeout too, after
which the API may have stored the batch) is counted, never retried, so no request can
create a notification the bench does not know about.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from notifier.models import OPEN_STATUSES, Status
from notifier_tools.stack.components import StackConfig
from notifier_tools.stack.lifecycle import restart_worker
from notifier_tools.stack.processes import kill, load_records, process_of

RETRY_STATUSES = frozenset({429})
MAX_RETRIES = 50


@dataclass(slots=True)
class SubmitStats:
    ids: list[str] = field(default_factory=list)
    rejected: int = 0  # items the API refused (a problem document in the batch answer)
    errors: int = 0  # requests that failed outright (not retried)
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(1e-6, self.finished - self.started)

    def note(self, what: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(what[:300])


def make_payloads(count: int, seed: str | None = None) -> list[dict[str, Any]]:
    """``count`` notifications, alternating FCM and APNs, each to its own device token."""
    run = seed or secrets.token_hex(4)
    payloads: list[dict[str, Any]] = []
    for i in range(count):
        if i % 2 == 0:
            to = {"platform": "fcm", "token": f"bench-{run}-{i}"}
        else:
            to = {"platform": "apns", "token": f"{run}{i:056x}"}
        payloads.append({"to": to, "title": "bench", "body": f"n{i}"})
    return payloads


class Submitter:
    """Posts the payloads in batches through nginx, ``connections`` requests in flight."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        key: str,
        *,
        batch_size: int,
        rate: float | None,
        connections: int,
        on_progress: Callable[[int], None],
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.batch_size = batch_size
        self.rate = rate
        self.slots = asyncio.Semaphore(connections)
        self.on_progress = on_progress
        self.stats = SubmitStats()

    async def run(
        self, payloads: list[dict[str, Any]], stop: asyncio.Event | None = None
    ) -> SubmitStats:
        """Post every payload, or stop scheduling new requests once ``stop`` is set (the
        requests in flight still finish, so every id the API accepted is in the stats)."""
        batches = [
            payloads[i : i + self.batch_size] for i in range(0, len(payloads), self.batch_size)
        ]
        loop = asyncio.get_running_loop()
        self.stats.started = time.time()
        start = loop.time()
        tasks: list[asyncio.Task[None]] = []
        sent = 0
        for batch in batches:
            if self.rate:
                delay = start + sent / self.rate - loop.time()
                if delay > 0 and stop is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                elif delay > 0:
                    await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            await self.slots.acquire()
            tasks.append(asyncio.create_task(self._post(batch)))
            sent += len(batch)
        await asyncio.gather(*tasks)
        self.stats.finished = time.time()
        return self.stats

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        try:
            for _ in range(MAX_RETRIES):
                if len(batch) == 1:
                    done = await self._post_one(batch[0])
                else:
                    done = await self._post_batch(batch)
                if done:
                    return
                self.stats.retries += 1
                await asyncio.sleep(0.05 + random.random() * 0.2)
            self.stats.errors += len(batch)
            self.stats.note("gave up after repeated 429 answers")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.errors += len(batch)
            self.stats.note(f"{type(exc).__name__}: {exc}")
        finally:
            self.slots.release()

    async def _post_batch(self, batch: list[dict[str, Any]]) -> bool:
        url = f"{self.base_url}/v1/notifications/batch"
        raw = orjson.dumps({"notifications": batch})
        async with self.session.post(url, data=raw, headers=self.headers) as resp:
            if resp.status in RETRY_STATUSES:
                return False
            if resp.status != 200:
                self.stats.errors += len(batch)
                self.stats.note(f"batch answered {resp.status}: {await resp.text()}")
                return True
            body = await resp.json()
        accepted = 0
        for item in body.get("results", []):
            if "id" in item:
                self.stats.ids.append(item["id"])
                accepted += 1
            else:
                self.stats.rejected += 1
                self.stats.note(f"item refused: {item.get('error')}")
        self.on_progress(accepted)
        return True

    async def _post_one(self, payload: dict[str, Any]) -> bool:
        url = f"{self.base_url}/v1/notifications"
        raw = orjson.dumps(payload)
        async with self.session.post(url, data=raw, headers=self.headers) as resp:
            if resp.status in RETRY_STATUSES:
                return False
            if resp.status not in (200, 202):
                self.stats.rejected += 1
                self.stats.note(f"answered {resp.status}: {await resp.text()}")
                return True
            body = await resp.json()
        self.stats.ids.append(body["id"])
        self.on_progress(1)
        return True


@dataclass(slots=True)
class KillLog:
    kills: list[dict[str, Any]] = field(default_factory=list)


async def kill_workers(
    config: StackConfig, every: float, stop: asyncio.Event, log: KillLog, say: Callable[[str], None]
) -> None:
    """Every ``every`` seconds, SIGKILL one random running worker and start it again."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            return
        except TimeoutError:
            pass
        workers = [
            r
            for r in load_records(config.pids_dir)
            if r.name.startswith("worker-") and process_of(r) is not None
        ]
        if not workers:
            continue
        victim = random.choice(workers)
        killed_at = time.time()
        await asyncio.to_thread(kill, victim)
        record = await asyncio.to_thread(restart_worker, config, victim.name, lambda _l: None)
        log.kills.append(
            {"worker": victim.name, "pid": victim.pid, "at": killed_at, "new_pid": record.pid}
        )
        say(f"killed {victim.name} (pid {victim.pid}); restarted as pid {record.pid}")


def open_count(counts: dict[str, int]) -> int:
    return sum(counts.get(s.value, 0) for s in OPEN_STATUSES)


def final_count(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s not in {x.value for x in OPEN_STATUSES})


def status_dict(counts: dict[Status, int]) -> dict[str, int]:
    return {str(getattr(s, "value", s)): int(n) for s, n in counts.items()}
