"""Prometheus configuration for a pipeline run on this machine (``notifier stack``, tests).

The Docker deployment uses ``prometheus/prometheus.yml`` (workers found through Docker's
DNS); a local run knows its ports, so it gets static targets. Both use the same job names
(``api``, ``worker``) and the same rules files, so alerts and dashboards read the same
series either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

API_JOB = "api"
WORKER_JOB = "worker"
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h)$")
_TARGET = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


def _quoted(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value)


def _check_targets(targets: Sequence[str], what: str) -> None:
    for target in targets:
        if not _TARGET.match(target):
            raise ValueError(f"{what} target must be host:port, got {target!r}")


def _scrape_job(name: str, targets: Sequence[str]) -> list[str]:
    lines = [f"  - job_name: {_quoted(name)}", "    static_configs:"]
    listed = ", ".join(_quoted(t) for t in targets)
    lines.append(f"      - targets: [{listed}]")
    return lines


def render_local_prometheus_config(
    api_targets: list[str],
    worker_targets: list[str],
    rules_files: Sequence[Path | str],
    scrape_interval: str = "5s",
) -> str:
    """The ``prometheus.yml`` text for API and worker processes at ``host:port`` targets.

    ``rules_files`` are written as absolute paths, so the file works from any directory.
    Raises ValueError for a malformed target or interval.
    """
    if not _DURATION.match(scrape_interval):
        raise ValueError(f"scrape_interval must look like 5s or 1m, got {scrape_interval!r}")
    _check_targets(api_targets, "api")
    _check_targets(worker_targets, "worker")
    lines = [
        "# Rendered by notifier_tools.promconf for a local run; edit prometheus/ in the repo.",
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
        f"  scrape_timeout: {scrape_interval}",
        "  external_labels:",
        '    deployment: "local"',
    ]
    if rules_files:
        lines.append("rule_files:")
        lines.extend(f"  - {_quoted(str(Path(p).resolve()))}" for p in rules_files)
    else:
        lines.append("rule_files: []")
    lines.append("scrape_configs:")
    lines.extend(_scrape_job(API_JOB, api_targets))
    lines.extend(_scrape_job(WORKER_JOB, worker_targets))
    return "\n".join(lines) + "\n"
