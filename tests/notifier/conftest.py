"""Fixtures for the core's tests that need the real store and broker: the worker tests' own
(a database of each test's own on the store under test, a broker connection)."""

from tests.workers.conftest import broker, store, store_url

__all__ = ["broker", "store", "store_url"]
