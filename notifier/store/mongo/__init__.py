"""The notification store on MongoDB (PyMongo's async API): :class:`MongoStore`."""

from notifier.store.mongo.store import MongoStore

__all__ = ["MongoStore"]
