"""The vault's tests run on each real store, with the store contract suite's fixtures."""

from tests.store.conftest import connect_store, now, store, store_target

__all__ = ["connect_store", "now", "store", "store_target"]
