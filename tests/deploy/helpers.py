"""What the deploy tests share: the repo's files, PromQL metric-name extraction, and the
metric names the code exports (from the registries in notifier.metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from notifier import metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.scale.yml"
DOCKER_PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
RULES_FILES = [
    path
    for path in (ROOT / "prometheus" / "alerts.yml", ROOT / "prometheus" / "recording.yml")
    if path.exists()
]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

# Grafana's interval variables, replaced by a fixed window when Prometheus evaluates a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_NAMES = re.compile(r"(?<![A-Za-z0-9_:])((?:notifier_|notifier:|process_)[A-Za-z0-9_:]*)")


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def metric_names_in(expr: str) -> set[str]:
    """The notifier_*, notifier:* (recorded) and process_* series names a PromQL query reads.

    String literals and label matchers are removed first, so label values and label names
    never count as metric names.
    """
    bare = _MATCHERS.sub(" ", _STRINGS.sub('""', expr))
    return set(_NAMES.findall(bare))


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query in a dashboard JSON."""
    board = json.loads(path.read_text())
    found = []
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            found.append((panel.get("title", "?"), target.get("expr", "")))
    return found


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULES_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def all_queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` for every dashboard panel query and every rule expression."""
    queries = [
        (f"{path.name}: {title}", grafana_to_promql(expr))
        for path in DASHBOARDS
        for title, expr in dashboard_queries(path)
    ]
    for rule in rules():
        name = rule.get("alert") or rule.get("record")
        queries.append((f"rule {name}", rule["expr"]))
    return queries


def exported_series_names(registry: CollectorRegistry) -> dict[str, str]:
    """Every series name a registry can expose, mapped to its metric family name.

    prometheus_client adds ``_total`` to counters and ``_bucket``/``_sum``/``_count`` to
    histograms (and ``_created`` to both); a labeled metric with no children yet still has
    its family, so the names come from the family types, not from current samples.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: dict[str, str] = {}
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def exported_names() -> dict[str, str]:
    return {
        **exported_series_names(metrics.API_REGISTRY),
        **exported_series_names(metrics.WORKER_REGISTRY),
    }


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}
