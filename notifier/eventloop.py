"""Run a service's main coroutine: on uvloop when installed, with a quieter garbage collector.

uvloop runs the same asyncio code with a libuv core; measured here it cut the CPU per
delivery of a worker and per request of the API (figures in the README).

CPython's cyclic collector scans its young generation every 700 net container allocations.
A worker crosses that many times a second in short bursts (decoding a batch of claimed rows,
starting a message's push tasks) although reference counting frees nearly all of it: in a
2-worker drain each worker ran about 450 collections and a few full ones, near a tenth of
its CPU; an API batch request ran one every few items (about 8 % of the batch path). So
before serving, what is alive (modules, classes, settings) moves to the permanent
generation, never scanned again, and the young threshold is raised to 20,000: collections
then run only when garbage really accumulates (none in a worker's drain; RSS did not
change).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

GC_YOUNG_THRESHOLD = 20_000


def settle_gc() -> None:
    """Freeze what is alive now and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class RunningLoop:
    """``asyncio.get_running_loop()``, remembered, for objects used from one thread.

    On Python 3.11 each ``get_running_loop()`` makes a ``getpid()`` system call (a check
    that the loop was not inherited through ``fork``; 3.12 keeps the loop in the thread
    state), and a worker asked several times per push. A remembered loop stays right while
    it runs, since a thread runs one loop at a time; once it stops (a test's loop, say) the
    next call looks again.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop where available, after :func:`settle_gc`."""
    settle_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
