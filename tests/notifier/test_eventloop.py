"""Services run with the collector settled: start-up objects frozen, a higher young threshold."""

from __future__ import annotations

import subprocess
import sys

from notifier.eventloop import GC_YOUNG_THRESHOLD

PROBE = """
import gc
from notifier import eventloop

async def main():
    return gc.get_threshold()[0], gc.get_freeze_count()

print(*eventloop.run(main()))
"""


def test_a_service_runs_with_a_settled_collector() -> None:
    # in a child process: settling changes the interpreter's collector for good
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    threshold, frozen = map(int, done.stdout.split())
    assert threshold == GC_YOUNG_THRESHOLD
    assert frozen > 1000  # the imported modules' objects, at least
