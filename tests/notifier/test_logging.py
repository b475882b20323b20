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


SECRETS_PROBE = """
import logging, sys
import asyncpg
from notifier.logging import configure_logging, get_logger
from notifier.settings import LogFormat

SECRET = "device-token-" + "s3cr3t" * 10

def fail(token):
    # a driver error quoting the row, as asyncpg's DETAIL does
    err = asyncpg.exceptions.CheckViolationError("new row violates check constraint")
    err.detail = f"Failing row contains ({token})."
    raise err

def log_one(log):
    try:
        fail(SECRET)
    except Exception:
        log.exception("unhandled_error")

mode = sys.argv[1]
if mode != "default":  # default: a command that never configures logging (dlq, prune)
    configure_logging(LogFormat(mode), "info")
log_one(get_logger("probe"))
log_one(logging.getLogger("aiohttp.server"))
"""


def test_tracebacks_hold_no_locals_and_no_driver_message_in_any_format() -> None:
    """Every process logs through notifier.logging: workers, API, CLI commands, stdlib."""
    for mode in ("json", "console", "default"):
        done = subprocess.run(
            [sys.executable, "-c", SECRETS_PROBE, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        out = done.stdout + done.stderr
        assert out.count("CheckViolationError") >= 2 - (mode == "default"), (mode, out)
        assert "s3cr3t" not in out, (mode, out)
