"""The emulator's memory: injected faults, auth switches, issued tokens and delivery counts.

One process owns one :class:`EmulatorState`; every handler runs on its event loop, so
plain dicts are enough. Counting is per notification id (APNs ``apns-id``, FCM
``message.data.notification_id``) with the emulator's clock (``time.time()``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any

from emulator.latency import LatencyProfile

WILDCARD = "*"  # a fault set for this token applies to every token without its own


class FaultKind(StrEnum):
    DEAD = "dead"  # APNs 410 Unregistered, FCM 404 UNREGISTERED
    BAD = "bad"  # APNs 400 BadDeviceToken, FCM 400 INVALID_ARGUMENT (FcmError)
    FLAKY = "flaky"  # the next N requests: APNs 503 ServiceUnavailable, FCM 503 UNAVAILABLE
    RATE_LIMITED = "rate_limited"  # the next N requests: 429 with Retry-After
    SLOW = "slow"  # every request waits delay_ms before it is handled
    ERROR = "error"  # the next N requests: HTTP status + APNs reason / FCM errorCode as given


_COUNTED = frozenset({"flaky", "rate_limited", "error"})


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    remaining: int = 1  # for flaky and rate_limited
    retry_after: int | None = None  # seconds: rate_limited (1 when unset), flaky (optional)
    delay_ms: int = 0  # for slow
    since_ms: int = 0  # for dead: the 410 timestamp
    status: int = 500  # for error
    reason: str = ""  # for error: APNs reason / FCM errorCode ("" = no FcmError detail)


@dataclass(slots=True)
class PlatformCounts:
    accepted: int = 0
    rejected: int = 0
    connections: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "connections": len(self.connections),
        }


@dataclass(slots=True)
class AuthSwitches:
    """Knobs for token-refresh tests."""

    token_lifetime: int = 3600  # expires_in of issued FCM access tokens, seconds
    reject_fcm: int = 0  # the next N FCM sends answer 401 UNAUTHENTICATED
    reject_apns: int = 0  # the next N APNs pushes answer 403 ExpiredProviderToken
    reject_token: int = 0  # the next N token requests answer 400 invalid_grant


class EmulatorState:
    """Faults per device token, auth switches, issued tokens and delivery counts."""

    def __init__(
        self,
        token_lifetime: int = 3600,
        recent_size: int = 1000,
        latency: LatencyProfile | None = None,
    ) -> None:
        self.default_token_lifetime = token_lifetime
        # the profile the emulator started with (--latency): reset() comes back to it
        self.default_latency = LatencyProfile.none() if latency is None else latency
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        # FCM access token -> (expires_at, private_key_id of the service account it is for)
        self.access_tokens: dict[str, tuple[float, str]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget faults, switches, counts and recent requests (issued tokens stay valid);
        the latency profile goes back to the one the emulator started with."""
        self.latency = self.default_latency
        self.faults: dict[str, Fault] = {}
        self.delays: dict[str, int] = {}
        self.auth = AuthSwitches(token_lifetime=self.default_token_lifetime)
        # id -> [count, first, last, platform, credential of the last push]
        self.deliveries: dict[str, list[Any]] = {}
        self.repeats = 0  # pushes of an id already counted (summed here: summary() is polled)
        self.platforms = {"apns": PlatformCounts(), "fcm": PlatformCounts()}
        self.token_requests = 0
        self.recent.clear()

    # faults ---------------------------------------------------------------------------

    def set_fault(self, token: str, fault: Fault) -> None:
        if fault.kind is FaultKind.SLOW:
            self.delays[token] = fault.delay_ms
        else:
            self.faults[token] = fault

    def clear_fault(self, token: str) -> None:
        self.faults.pop(token, None)
        self.delays.pop(token, None)

    def delay_for(self, token: str) -> float:
        """Seconds to wait before answering a push to ``token`` (0 when not slow)."""
        if not self.delays:
            return 0.0
        ms = self.delays.get(token, self.delays.get(WILDCARD, 0))
        return ms / 1000

    def take_fault(self, token: str) -> Fault | None:
        """The fault that applies to this request, consuming one of a counted fault."""
        if not self.faults:
            return None
        key = token if token in self.faults else WILDCARD
        fault = self.faults.get(key)
        if fault is None:
            return None
        if fault.kind in _COUNTED:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.faults[key]
        return fault

    async def injected_fault(self, platform: str, token: str) -> Fault | None:
        """Wait out a slow ``token``, then take its fault (counted as a rejection), if any."""
        delay = self.delay_for(token)
        if delay:
            await asyncio.sleep(delay)
        fault = self.take_fault(token)
        if fault is not None:
            self.reject(platform)
        return fault

    # access tokens --------------------------------------------------------------------

    def issue_access_token(self, token: str, now: float, account: str = "") -> int:
        """Remember a new FCM access token minted for ``account`` (its private_key_id);
        returns its lifetime in seconds."""
        lifetime = self.auth.token_lifetime
        if len(self.access_tokens) > 100_000:
            self.access_tokens = {t: e for t, e in self.access_tokens.items() if e[0] > now}
        self.access_tokens[token] = (now + lifetime, account)
        self.token_requests += 1
        return lifetime

    def access_token_account(self, token: str, now: float) -> str | None:
        """The account a still-valid access token was minted for, else ``None``."""
        entry = self.access_tokens.get(token)
        return entry[1] if entry is not None and entry[0] > now else None

    def access_token_valid(self, token: str, now: float) -> bool:
        return self.access_token_account(token, now) is not None

    def expire_access_tokens(self) -> int:
        """Make every access token issued so far expired; returns how many there were."""
        count = len(self.access_tokens)
        self.access_tokens = {t: (0.0, e[1]) for t, e in self.access_tokens.items()}
        return count

    # counting -------------------------------------------------------------------------

    def accept(
        self, platform: str, notification_id: str | None, now: float, credential: str = ""
    ) -> None:
        """Count a push; ``credential`` is the FCM project id or APNs ``TEAM/KEY`` it used."""
        self.platforms[platform].accepted += 1
        if notification_id is None:
            return
        entry = self.deliveries.get(notification_id)
        if entry is None:
            self.deliveries[notification_id] = [1, now, now, platform, credential]
        else:
            entry[0] += 1
            entry[2] = now
            entry[4] = credential
            self.repeats += 1

    def reject(self, platform: str) -> None:
        self.platforms[platform].rejected += 1

    def seen_connection(self, platform: str, client: str) -> None:
        self.platforms[platform].connections.add(client)

    def summary(self) -> dict[str, Any]:
        accepted = sum(p.accepted for p in self.platforms.values())
        return {
            "accepted": accepted,
            "unique": len(self.deliveries),
            "duplicates": self.repeats,
            "rejected": sum(p.rejected for p in self.platforms.values()),
            "token_requests": self.token_requests,
            "by_platform": {name: p.to_dict() for name, p in self.platforms.items()},
        }

    def delivery(self, notification_id: str) -> dict[str, Any] | None:
        entry = self.deliveries.get(notification_id)
        if entry is None:
            return None
        count, first, last, platform, credential = entry
        return {
            "id": notification_id,
            "count": count,
            "first_received_at": first,
            "last_received_at": last,
            "platform": platform,
            "credential": credential,
        }

    def export(self, skip: int = 0) -> dict[str, list[Any]]:
        """``{id: [count, first_received_at]}`` for every counted id but the first ``skip``.

        Ids are kept in the order they were first received, so a caller that read
        ``unique`` before its run can ask for what came since rather than for everything.
        """
        items = islice(self.deliveries.items(), max(0, skip), None)
        return {nid: [entry[0], entry[1]] for nid, entry in items}


def now() -> float:
    return time.time()
