"""Run a service's main coroutine on uvloop when it is installed (asyncio's loop otherwise).

uvloop runs the same asyncio code with a libuv core; measured here it cut the CPU per
delivery of a worker and per request of the API (figures in the README).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop where available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
