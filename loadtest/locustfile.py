"""Locust load test: upstream apps posting notifications through nginx to a running stack.

Profiles (pick one by naming its class on the command line; see loadtest/README.md):

- ``SteadyApp``: the 1M/day profile. Each user posts one notification per second with
  constant pacing, so ``-u 12`` is about 12 notifications/s (1,036,800 a day).
- ``BurstApp``: users post as fast as answers come back (a marketing blast).
- ``BatchApp``: each user posts one ``/v1/notifications/batch`` of ``LOADTEST_BATCH`` (100)
  items per second.

Device tokens are registered up front (``PUT /v1/devices/{token}``, ``LOADTEST_DEVICES``,
default 200) and notifications go to those tokens. The API key comes from
``NOTIFIER_API_KEY`` (default: the stack's ``<run dir>/api-key``). After the run, the test
waits for the deliveries to drain (``LOADTEST_DRAIN_SECONDS``, default 60) and reports the
delivery side: accepted vs sent vs failed, duplicates (the emulator's counts) and
created -> received latency percentiles; with ``--csv PREFIX`` it also writes
``PREFIX_delivery.json``. Run it with the local runner (not distributed).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

import requests
from locust import HttpUser, between, constant_pacing, events, task
from locust.env import Environment

from loadtest.accounting import account, format_report, statuses_from_deliveries
from notifier_tools.stack.components import StackConfig

RUN_DIR = Path(os.environ.get("LOADTEST_RUN_DIR", ".run/stack")).resolve()
STACK = StackConfig.load(RUN_DIR)
API_KEY = os.environ.get("NOTIFIER_API_KEY") or (STACK.api_key() if STACK else None) or ""
EMULATOR_URL = os.environ.get(
    "LOADTEST_EMULATOR_URL", STACK.emulator_url if STACK else "https://127.0.0.1:8443"
)
CA_FILE = os.environ.get("LOADTEST_CA_FILE", str(STACK.ca_file) if STACK else "")
DEVICE_COUNT = int(os.environ.get("LOADTEST_DEVICES", "200"))
BATCH_SIZE = int(os.environ.get("LOADTEST_BATCH", "100"))
DRAIN_SECONDS = float(os.environ.get("LOADTEST_DRAIN_SECONDS", "60"))
RUN_ID = secrets.token_hex(4)
DEFAULT_HOST = STACK.base_url if STACK else "http://127.0.0.1:8080"

DEVICES: list[dict[str, str]] = []  # {token, platform, user_id}, registered at test start
ACCEPTED: list[str] = []  # ids the API accepted during this run
PUSHED_BEFORE = [0]  # the emulator's count of distinct ids before this run


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _new_devices(count: int) -> list[dict[str, str]]:
    devices = []
    for i in range(count):
        if i % 2 == 0:
            token, platform = f"locust-{RUN_ID}-{i}", "fcm"
        else:
            token, platform = f"{RUN_ID}{i:056x}", "apns"
        devices.append({"token": token, "platform": platform, "user_id": f"user-{RUN_ID}-{i}"})
    return devices


def _put_with_retry(session: requests.Session, url: str, body: dict[str, str]) -> None:
    for _ in range(50):
        resp = session.put(url, json=body, headers=_headers(), timeout=10)
        if resp.status_code != 429:
            resp.raise_for_status()
            return
        time.sleep(0.05)
    raise RuntimeError(f"device registration kept answering 429: {url}")


def register_devices(environment: Environment, **_: Any) -> None:
    """Register the device tokens the users will notify, before any user starts."""
    if not API_KEY:
        raise RuntimeError("set NOTIFIER_API_KEY (or run `notifier stack up` first)")
    DEVICES.clear()
    ACCEPTED.clear()
    PUSHED_BEFORE[0] = _pushed()  # the drain then asks only for what came since
    devices = _new_devices(DEVICE_COUNT)
    host = environment.host or DEFAULT_HOST
    with requests.Session() as session:
        for device in devices:
            body = {"user_id": device["user_id"], "platform": device["platform"]}
            _put_with_retry(session, f"{host}/v1/devices/{device['token']}", body)
    DEVICES.extend(devices)


def _notification(device: dict[str, str]) -> dict[str, Any]:
    return {
        "to": {"platform": device["platform"], "token": device["token"]},
        "user_id": device["user_id"],
        "title": "locust",
        "body": f"hello {random.randrange(1_000_000)}",
    }


class _App(HttpUser):
    """An upstream app with the stack's API key; subclasses set the pacing."""

    abstract = True
    host = DEFAULT_HOST

    def _post_one(self) -> None:
        payload = _notification(random.choice(DEVICES))
        with self.client.post(
            "/v1/notifications",
            json=payload,
            headers=_headers(),
            name="POST /v1/notifications",
            catch_response=True,
        ) as resp:
            if resp.status_code == 202:
                ACCEPTED.append(resp.json()["id"])
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")


class SteadyApp(_App):
    """The 1M/day profile: one notification per user per second, constant pacing."""

    wait_time = constant_pacing(1.0)

    @task
    def notify(self) -> None:
        self._post_one()


class BurstApp(_App):
    """A blast: each user posts again as soon as the previous answer arrives."""

    wait_time = between(0.0, 0.01)

    @task
    def notify(self) -> None:
        self._post_one()


class BatchApp(_App):
    """Bulk senders: one batch of LOADTEST_BATCH notifications per user per second."""

    wait_time = constant_pacing(1.0)

    @task
    def notify_batch(self) -> None:
        items = [_notification(random.choice(DEVICES)) for _ in range(BATCH_SIZE)]
        with self.client.post(
            "/v1/notifications/batch",
            json={"notifications": items},
            headers=_headers(),
            name="POST /v1/notifications/batch",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            results = resp.json().get("results", [])
            ACCEPTED.extend(r["id"] for r in results if "id" in r)
            refused = sum(1 for r in results if "id" not in r)
            if refused:
                resp.failure(f"{refused} items refused")
            else:
                resp.success()


def _pushed() -> int:
    """Distinct ids the emulator has received so far (a counter it keeps)."""
    resp = requests.get(f"{EMULATOR_URL}/_emulator/summary", verify=CA_FILE, timeout=60)
    resp.raise_for_status()
    return int(resp.json()["unique"])


def _deliveries() -> dict[str, list[float]]:
    """The emulator's counts of the ids it received since the run began."""
    resp = requests.get(
        f"{EMULATOR_URL}/_emulator/deliveries",
        params={"skip": PUSHED_BEFORE[0]},
        verify=CA_FILE,
        timeout=60,
    )
    resp.raise_for_status()
    data: dict[str, list[float]] = resp.json()
    return data


def _drain(host: str) -> dict[str, Any]:
    """Wait until the emulator saw every accepted id (or the drain timeout), then account.

    Progress is the emulator's count; its per-id export (every id since the run began) is
    read once, at the end.
    """
    ids = list(ACCEPTED)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and _pushed() - PUSHED_BEFORE[0] < len(ids):
        time.sleep(1.0)
    deliveries = _deliveries()
    missing = [i for i in ids if i.lower() not in deliveries]
    looked_up: dict[str, str] = {}
    with requests.Session() as session:
        for nid in missing[:2000]:
            resp = session.get(f"{host}/v1/notifications/{nid}", headers=_headers(), timeout=10)
            if resp.status_code == 200:
                looked_up[nid] = resp.json().get("status", "pending")
    report = account(ids, deliveries, statuses_from_deliveries(ids, deliveries, looked_up))
    return report.to_dict() | {"lines": format_report(report)}


def report_deliveries(environment: Environment, **_: Any) -> None:
    """After the run: accepted vs sent vs failed, duplicates, latency; JSON next to the CSV."""
    if not ACCEPTED:
        print("delivery: nothing was accepted")
        return
    summary = _drain(environment.host or DEFAULT_HOST)
    print("delivery (after drain):")
    for line in summary["lines"]:
        print("  " + line)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        path = Path(f"{prefix}_delivery.json")
        path.write_text(json.dumps(summary, indent=1, default=str))
        print(f"  written to {path}")


events.test_start.add_listener(register_devices)  # type: ignore[no-untyped-call]
events.test_stop.add_listener(report_deliveries)  # type: ignore[no-untyped-call]
