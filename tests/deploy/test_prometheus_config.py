"""Prometheus configs and rules pass promtool, alerts carry runbooks, and every dashboard and
rule reads only metric names the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from notifier_tools.promconf import render_local_prometheus_config

from .helpers import (
    DASHBOARDS,
    DOCKER_PROMETHEUS,
    PROMTOOL,
    ROOT,
    RULES_FILES,
    all_queries,
    dashboard_queries,
    exported_names,
    metric_names_in,
    recorded_names,
    rules,
)

REQUIRED_ALERTS = {
    "NotifierQueueBacklogGrowing",
    "NotifierDeliveryErrorRatioHigh",
    "NotifierDeliveryLatencyP99High",
    "NotifierNoWorkerUp",
    "NotifierSuppressedDuplicatesHigh",
    "NotifierDeadLetterQueueNotEmpty",
    "NotifierInstanceDown",
    "NotifierUnknownOutcomes",
    "NotifierTransactionalLatencySLOBreach",
    "NotifierBulkBacklogOld",
    "NotifierCredentialUnhealthy",
    "NotifierCredentialNoRecentSuccess",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_docker_config() -> None:
    result = _promtool("check", "config", str(DOCKER_PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rendered_local_config(tmp_path: Path) -> None:
    text = render_local_prometheus_config(
        ["127.0.0.1:8081", "127.0.0.1:8082"], ["127.0.0.1:9101"], RULES_FILES, "2s"
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = _promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(text)
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {"api": ["127.0.0.1:8081", "127.0.0.1:8082"], "worker": ["127.0.0.1:9101"]}
    assert config["rule_files"] == [str(p) for p in RULES_FILES]
    assert config["global"]["scrape_interval"] == "2s"


def test_local_config_uses_the_docker_job_names() -> None:
    docker_config = yaml.safe_load(DOCKER_PROMETHEUS.read_text())
    docker = {j["job_name"] for j in docker_config["scrape_configs"]}
    local = yaml.safe_load(render_local_prometheus_config(["h:1"], ["h:2"], []))
    assert {j["job_name"] for j in local["scrape_configs"]} <= docker
    assert local["rule_files"] == []


@pytest.mark.parametrize(
    ("api", "worker", "interval"),
    [(["nohost"], [], "5s"), ([], ["a b:1"], "5s"), ([], [], "5 s"), ([], [], "0s")],
)
def test_render_rejects_bad_input(api: list[str], worker: list[str], interval: str) -> None:
    with pytest.raises(ValueError):
        render_local_prometheus_config(api, worker, [], interval)


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", *map(str, RULES_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_behave_on_sample_series() -> None:
    tests = Path(__file__).with_name("alerts_test.yml")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", tests.name],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_required_alert_exists_with_annotations_and_a_runbook() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.MULTILINE)}
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        path, _, anchor = annotations["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor in anchors, f"{name}: no runbook section"


def test_every_dashboard_loads_with_unique_ids_and_the_provisioned_datasource() -> None:
    names = {p.name for p in DASHBOARDS}
    assert names >= {"overview.json", "workers.json", "queue.json", "api.json", "lanes.json"}
    datasource = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == datasource, (path.name, panel["title"])
                assert panel["targets"], (path.name, panel["title"])
        for title, expr in dashboard_queries(path):
            assert expr.strip(), (path.name, title)


def test_every_metric_in_dashboards_and_rules_is_exported_by_the_code() -> None:
    exported = exported_names()
    recorded = recorded_names()
    used: set[str] = set()
    for where, expr in all_queries():
        names = metric_names_in(expr)
        assert names or "up{" in expr, f"{where}: reads no notifier metric: {expr}"
        for name in names:
            known = name in exported or name in recorded
            assert known, f"{where}: {name} is not exported by notifier.metrics"
        used |= names
    # the dashboards cover the families ops rely on
    for family in (
        "notifier_deliveries_total",
        "notifier_delivery_latency_seconds_bucket",
        "notifier_provider_request_duration_seconds_bucket",
        "notifier_inflight_deliveries",
        "notifier_notifications",
        "notifier_queue_messages",
        "notifier_http_requests_total",
        "notifier_http_request_duration_seconds_bucket",
        "notifier_duplicates_suppressed_total",
        "notifier_queue_wait_seconds",  # the lanes' backlog age
        "notifier_credential_healthy",  # issue 16
        "notifier_credential_last_success_timestamp_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert family in used, family


def test_metric_name_extraction_ignores_labels_and_strings() -> None:
    expr = 'sum by (le) (rate(notifier_x_bucket{queue=~`notifier_y`, a="process_z"}[5m]))'
    assert metric_names_in(expr) == {"notifier_x_bucket"}
    assert metric_names_in("notifier:rate5m / process_open_fds") == {
        "notifier:rate5m",
        "process_open_fds",
    }
