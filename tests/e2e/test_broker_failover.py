"""A RabbitMQ node lost mid-run (issue 17, part 3): a 3-node cluster on loopback
(scripts/rabbit_cluster.sh), the work queue a quorum queue on all three, an API process,
two workers and the emulator; 20,000 notifications through the API; the node leading the
work queue SIGKILLed while they flow.

Asserted: nothing accepted is lost (each id pushed and ``sent``); duplicate pushes, counted
by the emulator, stay within the work in flight at the kill (workers x concurrency: only a
claimed notification can be pushed, and a worker claims at most ``concurrency`` at once);
delivery resumes (the longest pause between pushes after the kill) within
``RESUME_SECONDS``, and each client of the lost node is on a live one within
``RECONNECT_SECONDS``. The figures are printed (``-s`` shows them).

Clients are spread as a deployment might list the nodes: the API and worker 1 list node 1
first, worker 2 node 2 first. The first declaration (on node 1) puts the queue's leader on
node 1, so the kill takes the API's and worker 1's connections with it, while worker 2
keeps its own and sees only the leader change.

What it showed on RabbitMQ 3.10 (Debian 12): in every run some 1,400-1,550 ids (about
one consumer's prefetch of 50-id messages) lost their wake-up in the election and were
published again by the sweeper's lost-wake-up take, once the queue had moved on by
max(60 s, 2 x NOTIFIER_LOCK_SECONDS): nothing is lost, but the last of them is pushed a
minute or two after the kill, not seconds. This looks like rabbitmq-server#15473 (open):
messages a dead leader handed to a consumer, left unacked in the queue and unknown to the
channel, until that channel closes.

Slow (4 to 7 minutes on 2 shared cores, 1 to 2 of them starting the cluster): ``make
test-slow`` runs it, and CI through it (.ci/run).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadtest.accounting import created_seconds
from loadtest.driver import Submitter, make_payloads
from notifier.apikeys import generate_key, hash_key
from notifier.broker import Broker
from notifier.models import Status, utcnow
from notifier.settings import Settings, load_settings
from notifier.store.factory import open_store
from notifier.sweeper import UNPUBLISHED_GRACE_SECONDS
from notifier_tools.procs import free_port
from tests.api.processes import spawn_api, stop, wait_healthy
from tests.conftest import ROOT
from tests.support import wait_for
from tests.workers.conftest import WorkerPool

# timeout: the cluster's start (1-2 min on 2 shared cores), the run, and the sweeper's
# lost-wake-up recovery (60 s after the queue moved past, see the module's last note)
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

CLUSTER = str(ROOT / "scripts" / "rabbit_cluster.sh")
# Names and ports of this test's own: a cluster started by hand (rabbit-c, 5681-5683) may run.
CLUSTER_ENV = {
    "NOTIFIER_CLUSTER_NAME": "rabbit-failover",
    "NOTIFIER_CLUSTER_AMQP_BASE": "5690",
    "NOTIFIER_CLUSTER_DIST_BASE": "25690",
}
TOTAL = 20_000
RATE = 400.0  # notifications/s submitted: the run spans the kill (about 50 s)
KILL_AFTER_PUSHED = 4_000  # the kill comes once this many were pushed: mid-run
WORKERS = 2
CONCURRENCY = 32
# The bound: a notification is pushed only once claimed, and a worker holds at most
# CONCURRENCY claims; only those in flight when the node died can be pushed again.
MAX_DUPLICATES = WORKERS * CONCURRENCY
# Delivery resumes: the longest pause between two pushes after the kill. Meanwhile the
# clients move to a live node (at once: the lost node refuses, the next answers), the queue
# elects a new leader (Raft, a few seconds), the API publishes again what was unconfirmed
# (up to 10 s) and the workers push what they had already received. At worst the broker
# refuses the API's publishes for longer and the sweeper publishes them after its grace for
# unconfirmed ones. (Before a nacked publish replaced the API's publishing channel, RabbitMQ
# 3.10 nacked that restored channel's publishes for minutes in 2 runs of 4: pauses of 26 and
# 31 s; since, under 1 s.)
RESUME_SECONDS = UNPUBLISHED_GRACE_SECONDS + 10.0
# Each client of the lost node connected to a live one within this (measured: 1-2 s).
RECONNECT_SECONDS = 10.0


def cluster(*args: str) -> str:
    done = subprocess.run(
        [CLUSTER, *args],
        env={**os.environ, **CLUSTER_ENV},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"rabbit_cluster.sh {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def node_name(n: int) -> str:
    return f"{CLUSTER_ENV['NOTIFIER_CLUSTER_NAME']}-{n}@localhost"


QUEUE_INFO = ("name", "type", "leader", "members", "online", "--formatter", "json")


def queue_info(ask: int, queue: str) -> dict[str, Any]:
    """The queue's type, leader, members and online members, as node ``ask`` sees them."""
    done = subprocess.run(
        ["rabbitmqctl", "-n", node_name(ask), "-q", "list_queues", *QUEUE_INFO],
        env={**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for row in json.loads(done.stdout):
        if row["name"] == queue:
            return dict(row)
    raise AssertionError(f"queue {queue} not found on {node_name(ask)}")


@pytest.fixture(scope="module")
def urls() -> Iterator[list[str]]:
    """A fresh 3-node cluster for this module; its AMQP URLs, node 1 first."""
    cluster("down")  # what an interrupted run left
    cluster("up")
    try:
        yield cluster("urls").split(",")
    finally:
        cluster("down")


@pytest.fixture
async def api_key_and_settings(
    fresh_pg_url: str, urls: list[str]
) -> AsyncIterator[tuple[str, Settings]]:
    """PostgreSQL: the MongoDB stand-in sustains about 100 notifications/s (tests/conftest.py),
    a fifth of this run's rate, and the test is about the broker."""
    settings = load_settings(
        {
            "NOTIFIER_STORE_URL": fresh_pg_url,
            "NOTIFIER_AMQP_URL": ",".join(urls),
            "NOTIFIER_QUEUE": f"failover.{os.getpid()}",
        }
    )
    store = await open_store(settings)
    key = generate_key()
    await store.add_api_key("failover", hash_key(key), utcnow())
    await store.close()
    yield key, settings


def rotated(urls: list[str], first: int) -> str:
    return ",".join(urls[first:] + urls[:first])


async def test_leader_node_killed_mid_run_loses_nothing(
    api_key_and_settings: tuple[str, Settings],
    urls: list[str],
    emulator: Any,
    tmp_path: Path,
) -> None:
    key, settings = api_key_and_settings
    # The work queue, declared as every process declares it: a quorum queue on all three.
    broker = await Broker.connect(settings)
    await broker.close()
    info = await asyncio.to_thread(queue_info, 1, settings.queue)
    assert info["type"] == "quorum"
    assert sorted(info["members"]) == [node_name(n) for n in (1, 2, 3)]

    port = free_port()
    api = spawn_api(settings, port, tmp_path / "api.log", NOTIFIER_LOG_LEVEL="info")
    worker_env = {
        "NOTIFIER_STORE_URL": settings.store_url,
        "NOTIFIER_QUEUE": settings.queue,
        "NOTIFIER_LOCK_SECONDS": "30",
        "NOTIFIER_LOG_LEVEL": "info",
        **emulator.env,
    }
    pool = WorkerPool(worker_env, tmp_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/health", api)
        await pool.start(CONCURRENCY, NOTIFIER_AMQP_URL=rotated(urls, 0))
        await pool.start(CONCURRENCY, NOTIFIER_AMQP_URL=rotated(urls, 1))
        figures = await _run(f"http://127.0.0.1:{port}", key, settings, emulator)
    finally:
        await pool.close()
        stop(api)
    # what the workers' sweepers published again (unpublished or lost wake-ups)
    logs = [(tmp_path / "api.log").read_text(), *(proc.log() for proc in pool.procs)]
    figures["sweeper_republished"] = sum(
        event.get("count", 0) for event in _events(logs, "sweeper_published")
    )
    # from the kill to each lost client's connection to a live node
    figures["reconnect_seconds"] = sorted(
        round(datetime.fromisoformat(event["timestamp"]).timestamp() - figures["killed_at"], 2)
        for event in _events(logs, "amqp_node_connected")
        if datetime.fromisoformat(event["timestamp"]).timestamp() > figures["killed_at"]
    )
    figures.pop("killed_at")
    print("\nbroker failover:", json.dumps(figures))
    assert figures["errors"] == 0, figures
    assert figures["lost"] == 0, figures
    assert figures["not_sent"] == 0, figures
    assert figures["duplicates"] <= MAX_DUPLICATES, figures
    assert figures["resume_seconds"] <= RESUME_SECONDS, figures
    assert figures["reconnect_seconds"], figures  # the API and worker 1 were on the lost node
    assert max(figures["reconnect_seconds"]) <= RECONNECT_SECONDS, figures


async def _run(base_url: str, key: str, settings: Settings, emulator: Any) -> dict[str, Any]:
    payloads = make_payloads(TOTAL)
    for payload in payloads:
        payload["lane"] = "transactional"  # the queue declared above (bulk: one per app)
    baseline = await emulator.control.pushed()
    async with aiohttp.ClientSession() as session:
        submitter = Submitter(
            session,
            base_url,
            key,
            batch_size=100,
            rate=RATE,
            connections=8,
            on_progress=lambda n: None,
        )
        submitting = asyncio.create_task(submitter.run(payloads))
        await wait_for(
            lambda: _pushed_since(emulator, baseline, KILL_AFTER_PUSHED),
            timeout=120,
            interval=0.2,
            what=f"{KILL_AFTER_PUSHED} pushes before the kill",
        )
        leader = (await asyncio.to_thread(queue_info, 1, settings.queue))["leader"]
        victim = int(leader.split("@")[0].rsplit("-", 1)[1])
        killed_at = time.time()
        await asyncio.to_thread(cluster, "kill", str(victim))
        stats = await submitting
    ids = stats.ids
    wanted = set(ids)
    deliveries = await _all_pushed(emulator, ids, timeout=240)
    store = await open_store(settings)
    counts: dict[Status, int] = {}

    async def all_sent() -> bool:
        counts.update(await store.counts_by_status("failover"))
        return counts.get(Status.SENT, 0) >= len(ids)

    try:  # each outcome is written just after its push
        with contextlib.suppress(AssertionError):  # counted as not sent
            await wait_for(all_sent, timeout=60, interval=0.5, what="every accepted id sent")
    finally:
        await store.close()
    survivor = 1 if victim != 1 else 2
    new_leader = (await asyncio.to_thread(queue_info, survivor, settings.queue))["leader"]
    after = sorted(
        deliveries[nid][1] for nid in ids if created_seconds(nid) > killed_at and nid in deliveries
    )
    receipts = sorted(entry[1] for nid, entry in deliveries.items() if nid in wanted)
    gaps = [b - a for a, b in itertools.pairwise(receipts) if b > killed_at]
    # push time minus acceptance time: before the kill (the pipeline's usual lag), after it
    lag_before = sorted(
        deliveries[nid][1] - created_seconds(nid)
        for nid in ids
        if nid in deliveries and created_seconds(nid) < killed_at
    )
    lag_after = sorted(
        deliveries[nid][1] - created_seconds(nid)
        for nid in ids
        if nid in deliveries and created_seconds(nid) >= killed_at
    )
    return {
        "accepted": len(ids),
        "errors": stats.errors + stats.rejected,
        "lost": sum(1 for nid in ids if nid not in deliveries),
        "not_sent": len(ids) - counts.get(Status.SENT, 0),
        "duplicates": sum(deliveries[nid][0] - 1 for nid in ids if nid in deliveries),
        "killed": leader,
        "new_leader": new_leader,
        "killed_at": killed_at,
        "resume_seconds": round(max(gaps, default=0.0), 2),
        # with a backlog this is mostly the queue's wait, not the failover's
        "first_push_of_one_accepted_after_kill": round(after[0] - killed_at, 2) if after else None,
        "drained_seconds_after_kill": round(receipts[-1] - killed_at, 2),
        "lag_p50_before_kill": round(lag_before[len(lag_before) // 2], 2) if lag_before else None,
        "lag_p50_after_kill": round(lag_after[len(lag_after) // 2], 2) if lag_after else None,
        "lag_max_after_kill": round(lag_after[-1], 2) if lag_after else None,
    }


def _events(logs: list[str], name: str) -> list[dict[str, Any]]:
    """The JSON log lines of event ``name`` in the processes' logs."""
    found = []
    for text in logs:
        for line in text.splitlines():
            if f'"{name}"' in line and line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
    return found


async def _pushed_since(emulator: Any, baseline: int, n: int) -> bool:
    return bool(await emulator.control.pushed() - baseline >= n)


async def _all_pushed(emulator: Any, ids: list[str], timeout: float) -> dict[str, list[Any]]:
    """Wait until the emulator received every id; ``{id: [count, first_received_at]}``."""
    wanted = set(ids)
    found: dict[str, list[Any]] = {}

    async def done() -> bool:
        found.update(
            {k: v for k, v in (await emulator.control.deliveries()).items() if k in wanted}
        )
        return len(found) == len(wanted)

    with contextlib.suppress(AssertionError):  # counted as lost
        await wait_for(done, timeout=timeout, interval=1.0, what="every accepted id pushed")
    return found
