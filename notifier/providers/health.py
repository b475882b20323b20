"""Credential health: whether a credential's pushes are refused for the credential itself.

A credential turns unhealthy on an answer that blames it, not the notification: the
clients map FCM 401/403, ``THIRD_PARTY_AUTH_ERROR``, an OAuth2 token refusal, and APNs 403
``InvalidProviderToken``/``ExpiredProviderToken`` (after their one re-mint) to the code
``config_error``; a TLS failure is ``tls``. While unhealthy, one push per
``probe_seconds`` still goes out (the probe); every other is held without a request
(:data:`HELD`). Any answer that shows the provider
took the credential (sent, a dead token, a refused payload) heals it.

Clocks: ``time.monotonic`` for probes, ``time.time`` for the last success.
"""

from __future__ import annotations

import time

from prometheus_client import Gauge

from notifier.metrics import CREDENTIAL_HEALTHY, CREDENTIAL_LAST_SUCCESS
from notifier.providers.base import PushOutcome, PushResult

# The ``app`` (metric label, health record) of the environment's default credentials: the
# parentheses keep it apart from the app names people choose (docs/credentials.md).
DEFAULT_APP = "(environment)"
# The code every client gives an answer that blames our credential (fcm.py, apns.py,
# oauth.py's token refusals).
CREDENTIAL_FAULT = "config_error"
# No TLS session with the provider (http2.TransportFailure "tls"): as unhealthy as a refusal
TLS_FAILURE = "tls"
# Results the registry makes without a request: the credential is unhealthy and this push
# is not its probe, or the credential has its bounded share of pushes in flight already.
HELD = "credential_unhealthy"
BUSY = "credential_busy"
# notifier.decisions holds these as retrying on a time budget instead of max_attempts
_BLAMING = frozenset({CREDENTIAL_FAULT, TLS_FAILURE})
HOLD_CODES = frozenset({CREDENTIAL_FAULT, TLS_FAILURE, HELD, BUSY})
# the gauges' last-success time is written at most this often per credential
_SUCCESS_RESOLUTION_SECONDS = 1.0


def blames_credential(result: PushResult) -> bool:
    return result.code in _BLAMING


def provider_took_credential(result: PushResult) -> bool:
    """The provider answered past authentication: sent, dead token, refused payload."""
    return result.outcome is not PushOutcome.RETRY and (
        result.outcome is PushOutcome.SENT or result.provider_status is not None
    )


class CredentialHealth:
    """One credential's health in one worker, with its two gauges."""

    __slots__ = (
        "_healthy",
        "_last_success",
        "_next_probe",
        "_probe_seconds",
        "_reported",
        "_success_gauge",
    )

    def __init__(self, app: str, provider: str, probe_seconds: float) -> None:
        self._probe_seconds = probe_seconds
        self._healthy: Gauge = CREDENTIAL_HEALTHY.labels(app, provider)
        self._success_gauge: Gauge = CREDENTIAL_LAST_SUCCESS.labels(app, provider)
        self._healthy.set(1)
        self._next_probe: float | None = None  # None: healthy
        self._last_success = 0.0
        self._reported: bool | None = None  # the state last reported to the store

    @property
    def healthy(self) -> bool:
        return self._next_probe is None

    def admit(self) -> bool:
        """May a push go out now: yes while healthy; else only one per probe interval."""
        next_probe = self._next_probe
        if next_probe is None:
            return True
        now = time.monotonic()
        if now < next_probe:
            return False
        self._next_probe = now + self._probe_seconds
        return True

    def record(self, result: PushResult) -> bool | None:
        """Update from one answer; the state to report to the store when it differs from
        the last one reported (the first definite answer is reported too), else None."""
        if result.outcome is PushOutcome.SENT:
            wall = time.time()
            if wall - self._last_success >= _SUCCESS_RESOLUTION_SECONDS:
                self._last_success = wall
                self._success_gauge.set(wall)
        if blames_credential(result):
            if self._next_probe is None:
                self._next_probe = time.monotonic() + self._probe_seconds
                self._healthy.set(0)
        elif provider_took_credential(result):
            if self._next_probe is not None:
                self._next_probe = None
                self._healthy.set(1)
        else:
            return None  # says nothing of the credential
        healthy = self._next_probe is None
        if healthy is self._reported:
            return None
        self._reported = healthy
        return healthy
