"""deploy/rabbitmq/definitions.json imports into a real RabbitMQ, and the code's own
declarations (notifier.broker) are then accepted as equivalent: a differing argument would
make the broker refuse them (PRECONDITION_FAILED) and the workers would not start.

The topology is imported into a throwaway vhost of the shared test broker, removed after.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from notifier.broker import Broker, queue_for
from notifier.models import Lane
from notifier.settings import load_settings
from tests.conftest import AMQP_URL
from tests.support import wait_for

from .helpers import ROOT

pytestmark = pytest.mark.slow

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RABBIT_ENV = {"RABBITMQ_NODENAME": "rabbit@localhost", "ERL_EPMD_ADDRESS": "127.0.0.1"}


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RABBITMQCTL, "-n", "rabbit@localhost", "-q", *args],
        env={**os.environ, **RABBIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def imported_vhost(services: None) -> Iterator[str]:
    if os.geteuid() != 0 or not Path(RABBITMQCTL).exists():
        pytest.skip("rabbitmqctl needs root on the machine that runs the test broker")
    vhost = f"deploy-test-{os.getpid()}-{secrets.token_hex(3)}"
    defs = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    for kind in ("queues", "exchanges", "bindings", "policies"):
        for item in defs[kind]:
            item["vhost"] = vhost
    defs["vhosts"] = [{"name": vhost}]
    user = urlsplit(AMQP_URL).username
    defs["permissions"] = [
        {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    ]
    # rabbitmqctl reads the file as the rabbitmq user, who cannot enter pytest's tmp dirs
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "definitions.json"
        path.write_text(json.dumps(defs))
        path.chmod(0o644)
        result = _ctl("import_definitions", str(path))
    assert result.returncode == 0, result.stderr
    try:
        yield vhost
    finally:
        _ctl("delete_vhost", vhost)


async def _imported(vhost: str) -> bool:
    """The import is asynchronous: done once both queues exist."""
    listed = await asyncio.to_thread(_ctl, "list_queues", "-p", vhost, "name")
    expected = {"notifications", "notifications.dead", "notifications.dead.bulk"}
    return expected <= set(listed.stdout.split())


async def test_code_declarations_match_the_imported_topology(imported_vhost: str) -> None:
    await wait_for(lambda: _imported(imported_vhost), timeout=30, interval=0.5, what="import")
    url = urlunsplit(urlsplit(AMQP_URL)._replace(path="/" + imported_vhost))
    settings = load_settings({"NOTIFIER_AMQP_URL": url})
    broker = await Broker.connect(settings)  # declares exchange, both queues, the binding
    try:
        await broker.publish(["00000000-0000-7000-8000-000000000000"])
        # a bulk queue is the code's alone (one per app), declared by its first publish
        await broker.publish(["00000000-0000-7000-8000-000000000002"], lane=Lane.BULK, app="a")
        await broker.publish_dead("00000000-0000-7000-8000-000000000001", "test")
        await broker.publish_dead("00000000-0000-7000-8000-000000000003", "test", Lane.BULK)
        depths = await broker.queue_depths([queue_for(settings, Lane.BULK, "a")])
    finally:
        await broker.close()
    assert depths == {
        "notifications": 1,
        "notifications.bulk.a": 1,
        "notifications.dead": 1,
        "notifications.dead.bulk": 1,
    }
    listed = _ctl("list_queues", "-p", imported_vhost, "name", "policy").stdout.splitlines()
    rows = [line.split("\t") for line in listed]
    policy = {row[0]: row[1] if len(row) > 1 else "" for row in rows}
    assert policy["notifications.dead"] == "notifier-dead-letter-cap"
    assert policy["notifications.dead.bulk"] == "notifier-dead-letter-cap"
