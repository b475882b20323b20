"""The notification store: one protocol (``base``), MongoDB and PostgreSQL implementations."""

from notifier.store.base import (
    CancelResult,
    ClaimMiss,
    ClaimResult,
    InsertResult,
    NotificationStore,
    Outcome,
    Page,
    RecoveredLock,
    StoreUnavailable,
)
from notifier.store.factory import open_store

__all__ = [
    "CancelResult",
    "ClaimMiss",
    "ClaimResult",
    "InsertResult",
    "NotificationStore",
    "Outcome",
    "Page",
    "RecoveredLock",
    "StoreUnavailable",
    "open_store",
]
