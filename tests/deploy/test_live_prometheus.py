"""A real Prometheus scraping a real API and worker (PostgreSQL, RabbitMQ, the emulator for
FCM and APNs), with the rendered local config and the repo's rules.

What is checked, and how:
- every target is up (``/api/v1/targets``) and every rule evaluates with health ``ok``;
- every dashboard and alert query evaluates without error (``/api/v1/query``), with
  Grafana's ``$__rate_interval`` replaced by ``1m``;
- after a few notifications are delivered end to end, the core queries return data;
  queries about rare events (429s, unknown outcomes, dead letters...) may legitimately
  have no series, so they are only required to evaluate;
- each metric family a query reads exists: either Prometheus has the series
  (``/api/v1/label/__name__/values``) or, for a labeled family with no samples yet, the
  target's ``/metrics`` has its ``# HELP`` line.
- a credential the provider refuses (the environment's FCM key, revoked at the emulator)
  holds its notification as retrying and fires ``NotifierCredentialUnhealthy`` (a copy
  with a short ``for:``; the real rule is seen pending, its 1 m is promtool's to check).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from emulator.testing import free_port, run_emulator
from notifier_tools.promconf import render_local_prometheus_config
from tests.conftest import AMQP_URL
from tests.support import wait_for

from .helpers import PROMETHEUS, ROOT, RULES_FILES, all_queries, exported_names, metric_names_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

HOST = "127.0.0.1"
# Queries that must return data once notifications have been delivered (by panel/rule).
MUST_HAVE_DATA = (
    "notifier_deliveries_total",
    "notifier_delivery_latency_seconds_bucket",
    "notifier_provider_request_duration_seconds_bucket",
    "notifier_claim_latency_seconds_bucket",
    "notifier_http_requests_total",
    "notifier_http_request_duration_seconds_bucket",
    "notifier_notifications_accepted_total",
    "notifier_inflight_deliveries",
    "notifier_notifications",
    "notifier_queue_messages",
    "notifier_messages_consumed_total",
    "notifier_claims_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
)


@contextlib.asynccontextmanager
async def _process(
    argv: Sequence[str], env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a process with output to ``log``; SIGTERM it (SIGKILL after 15 s) by its PID."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    await proc.wait()


async def _answers(client: httpx.AsyncClient, url: str, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
    try:
        return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _create_api_key(env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "apikey", "create", "--app", "deploy-test",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip().splitlines()[-1]


async def _deliver_some(client: httpx.AsyncClient, api: str, key: str, wave: int) -> None:
    """Post a few notifications through the API and wait until each is sent."""
    headers = {"Authorization": f"Bearer {key}"}
    targets = [{"platform": "apns", "token": f"{wave:02x}" * 32}] + [
        {"platform": "fcm", "token": f"fcm-deploy-test-{wave}-{i}"} for i in range(3)
    ]
    ids = []
    for to in targets:
        body = {"to": to, "title": "deploy test", "body": "hello"}
        response = await client.post(f"{api}/v1/notifications", json=body, headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    async def all_sent() -> bool:
        for nid in ids:
            doc = (await client.get(f"{api}/v1/notifications/{nid}", headers=headers)).json()
            if doc["status"] != "sent":
                return False
        return True

    await wait_for(all_sent, timeout=30, interval=0.2, what="notifications sent")


async def _targets_up(client: httpx.AsyncClient, prom: str, expected: int) -> bool:
    data = (await client.get(f"{prom}/api/v1/targets")).json()["data"]["activeTargets"]
    return len(data) == expected and all(t["health"] == "up" for t in data)


async def _rules_evaluated(client: httpx.AsyncClient, prom: str) -> list[dict[str, Any]] | None:
    groups = (await client.get(f"{prom}/api/v1/rules")).json()["data"]["groups"]
    found = [rule for group in groups for rule in group["rules"]]
    if found and all(not r["lastEvaluation"].startswith("0001") for r in found):
        return found
    return None


async def _has_series(client: httpx.AsyncClient, prom: str, name: str) -> bool:
    result = await _query(client, prom, name)
    return bool(result)


async def _query(client: httpx.AsyncClient, prom: str, expr: str) -> list[Any]:
    response = await client.get(f"{prom}/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


async def _help_lines(client: httpx.AsyncClient, urls: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for url in urls:
        text = (await client.get(url)).text
        names |= set(re.findall(r"^# HELP (\S+)", text, re.MULTILINE))
    return names


def _run_docker_healthcheck(port: int) -> int:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    line = re.search(r'CMD (\["python".*\])', dockerfile)
    assert line
    argv = json.loads(line.group(1))
    env = {**os.environ, "HEALTHCHECK_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=10).returncode


CREDENTIAL_ALERT = "NotifierCredentialUnhealthy"
# A copy of the credential alert in a group of its own, with a short `for:`: the real rule's
# expression, labels and annotations fire in this Prometheus within seconds, where the real
# rule only turns pending (its 1 m is checked by promtool, tests/deploy/alerts_test.yml).
FAST_GROUP = "notifier-credentials-fast"


def _fast_credential_rules(path: Path) -> Path:
    """Write a rules file holding a copy of the credential alert with ``for: 1s``."""
    groups = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == CREDENTIAL_ALERT]
    path.write_text(
        yaml.safe_dump({"groups": [{"name": FAST_GROUP, "rules": [{**rule, "for": "1s"}]}]})
    )
    return path


async def _credential_alert_states(client: httpx.AsyncClient, prom: str) -> dict[str, str]:
    """The credential alert's state per rule group, for the environment's FCM credential."""
    groups = (await client.get(f"{prom}/api/v1/rules")).json()["data"]["groups"]
    states = {}
    for group in groups:
        for rule in group["rules"]:
            if rule.get("name") != CREDENTIAL_ALERT:
                continue
            for alert in rule.get("alerts", []):
                labels = alert["labels"]
                if (labels.get("app"), labels.get("provider")) == ("(environment)", "fcm"):
                    states[group["name"]] = alert["state"]
    return states


async def _revoked_credential_alerts(
    client: httpx.AsyncClient, api: str, key: str, prom: str, emulator: Any
) -> None:
    """Revoke the environment's FCM credential at the emulator: the next FCM notification
    is held as retrying (config_error), the worker's gauge drops, and the credential alert
    turns pending on the real rule and fires on its fast copy, in this real Prometheus."""
    project = (await emulator.control.credentials())["fcm"][0]["project_id"]
    await emulator.control.revoke_fcm(project)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"to": {"platform": "fcm", "token": "fcm-deploy-test-revoked"}, "title": "held"}
    response = await client.post(f"{api}/v1/notifications", json=body, headers=headers)
    assert response.status_code == 202, response.text
    nid = response.json()["id"]

    async def held() -> dict[str, Any] | None:
        doc: dict[str, Any] = (
            await client.get(f"{api}/v1/notifications/{nid}", headers=headers)
        ).json()
        return doc if doc["status"] != "pending" else None

    doc = await wait_for(held, timeout=30, interval=0.2, what="the push answered")
    assert doc["status"] == "retrying" and doc["last_error"]["code"] == "config_error", doc

    async def fired() -> dict[str, str] | None:
        states = await _credential_alert_states(client, prom)
        return states if states.get(FAST_GROUP) == "firing" else None

    states = await wait_for(fired, timeout=30, interval=0.5, what="the credential alert firing")
    assert states.get("notifier-credentials") == "pending", states  # for: 1m not over yet
    alerts = (await client.get(f"{prom}/api/v1/alerts")).json()["data"]["alerts"]
    assert any(
        a["labels"]["alertname"] == CREDENTIAL_ALERT
        and a["labels"]["app"] == "(environment)"
        and a["labels"]["severity"] == "critical"
        and a["state"] == "firing"
        for a in alerts
    ), alerts


async def test_prometheus_scrapes_api_and_worker_and_every_query_evaluates(
    pg_url: str, queue_name: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": queue_name,
        "NOTIFIER_LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
    }
    api_port, worker_port, prom_port = free_port(), free_port(), free_port()
    api, worker = f"http://{HOST}:{api_port}", f"http://{HOST}:{worker_port}"
    prom = f"http://{HOST}:{prom_port}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_local_prometheus_config(
            [f"{HOST}:{api_port}"],
            [f"{HOST}:{worker_port}"],
            [*RULES_FILES, _fast_credential_rules(tmp_path / "fast.yml")],
            "1s",
        )
    )
    python = [sys.executable, "-m", "notifier"]
    async with (
        httpx.AsyncClient(timeout=10) as client,
        run_emulator(tmp_path / "keys") as emulator,
        _process(
            [*python, "api", "--host", HOST, "--port", str(api_port)], env, tmp_path / "api.log"
        ) as api_proc,
        _process(
            [*python, "worker", "--host", HOST, "--metrics-port", str(worker_port)],
            {**env, **emulator.env},
            tmp_path / "worker.log",
        ) as worker_proc,
        _process(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={HOST}:{prom_port}",
            ],
            env,
            tmp_path / "prometheus.log",
        ) as prom_proc,
    ):
        await wait_for(lambda: _answers(client, f"{api}/health", api_proc), what="api /health")
        await wait_for(
            lambda: _answers(client, f"{worker}/health", worker_proc), what="worker /health"
        )
        await wait_for(lambda: _answers(client, f"{prom}/-/ready", prom_proc), what="prometheus")
        # the image's HEALTHCHECK one-liner passes against the real processes
        assert await asyncio.to_thread(_run_docker_healthcheck, api_port) == 0
        assert await asyncio.to_thread(_run_docker_healthcheck, worker_port) == 0

        await wait_for(lambda: _targets_up(client, prom, 2), timeout=30, what="targets up")
        # A counter's first scraped value is its baseline: deliver once so the labeled
        # series exist and are scraped, then again so that rates and quantiles move.
        key = await _create_api_key(env)
        await _deliver_some(client, api, key, wave=1)
        await wait_for(
            lambda: _has_series(client, prom, 'notifier_deliveries_total{outcome="sent"}'),
            timeout=30,
            what="deliveries scraped",
        )
        await _deliver_some(client, api, key, wave=2)
        await wait_for(
            lambda: _has_series(client, prom, "rate(notifier_deliveries_total[1m]) > 0"),
            timeout=30,
            what="two scrapes after the deliveries",
        )
        # the API is scraped on its own schedule: wait for its two samples as well
        await wait_for(
            lambda: _has_series(client, prom, "rate(notifier_notifications_accepted_total[1m])"),
            timeout=30,
            what="two scrapes of the API after the requests",
        )
        rules_found = await wait_for(
            lambda: _rules_evaluated(client, prom), timeout=30, what="rules evaluated"
        )
        for rule in rules_found:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

        with_data: dict[tuple[str, str], bool] = {}
        for where, expr in all_queries():
            with_data[(where, expr)] = bool(await _query(client, prom, expr))
        # shown on failure (or with -rP): which queries had no series in this short run
        print("\n".join(f"no data: {w}: {q}" for (w, q), has in with_data.items() if not has))
        for family in MUST_HAVE_DATA:
            reading = [key for key in with_data if family in metric_names_in(key[1])]
            assert reading, f"no query reads {family}"
            assert any(with_data[q] for q in reading), f"no data for any query on {family}"

        in_prometheus = set(
            (await client.get(f"{prom}/api/v1/label/__name__/values")).json()["data"]
        )
        helps = await _help_lines(client, [f"{api}/metrics", f"{worker}/metrics"])
        exported = exported_names()
        for where, expr in all_queries():
            for name in metric_names_in(expr):
                family = exported.get(name, name)
                known = name in in_prometheus or {name, family, family + "_total"} & helps
                assert known, f"{where}: {name} neither scraped nor in any target's HELP"

        await _revoked_credential_alerts(client, api, key, prom, emulator)
