"""Hot paths ask whether debug events are kept before building one."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
from notifier.logging import configure_logging, debug_enabled
seen = [debug_enabled()]
configure_logging(level="info")
seen.append(debug_enabled())
configure_logging(level="debug")
seen.append(debug_enabled())
print(*seen)
"""


def test_debug_enabled_follows_the_configured_level() -> None:
    # in a child process: configuring structlog is for the whole interpreter
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    # unconfigured structlog keeps every level
    assert done.stdout.split() == ["True", "False", "True"]
