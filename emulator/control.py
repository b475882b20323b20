"""An async client for the emulator's control API (:mod:`emulator.admin`).

Tests and benchmarks use it to inject faults per device token, flip auth switches and
read delivery counts, without knowing the routes.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


class EmulatorControl:
    """Drives one emulator at ``endpoint`` (``https://127.0.0.1:PORT``), trusting ``ca_file``."""

    def __init__(self, endpoint: str, ca_file: Path, timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        self._client = httpx.AsyncClient(
            base_url=f"{self.endpoint}/_emulator/", verify=context, timeout=timeout, trust_env=False
        )

    async def __aenter__(self) -> EmulatorControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        response = await self._client.request(method, route, json=body)
        if response.status_code == 404 and route.startswith("deliveries/"):
            return None
        response.raise_for_status()
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "health")
        return result

    async def reset(self) -> None:
        """Forget counts, faults, auth switches and recent requests."""
        await self._call("POST", "reset")

    # faults ----------------------------------------------------------------------------

    async def set_fault(self, token: str, kind: str, **options: int) -> None:
        """Raw fault setter: ``kind`` is dead|bad|flaky|rate_limited|slow; ``"*"`` = all."""
        await self._call("POST", "faults", {"token": token, "kind": kind, **options})

    async def dead(self, token: str, since_ms: int | None = None) -> None:
        """APNs 410 Unregistered (``timestamp`` = ``since_ms``, default now) / FCM 404."""
        options = {} if since_ms is None else {"since_ms": since_ms}
        await self.set_fault(token, "dead", **options)

    async def bad(self, token: str) -> None:
        """APNs 400 BadDeviceToken / FCM 400 INVALID_ARGUMENT (FcmError)."""
        await self.set_fault(token, "bad")

    async def flaky(self, token: str, count: int, retry_after: int | None = None) -> None:
        """The next ``count`` pushes answer 503 (with ``Retry-After: retry_after`` when
        given), then pushes succeed."""
        options = {} if retry_after is None else {"retry_after": retry_after}
        await self.set_fault(token, "flaky", count=count, **options)

    async def rate_limited(self, token: str, count: int, retry_after: int = 1) -> None:
        """The next ``count`` pushes answer 429 with ``Retry-After: retry_after``."""
        await self.set_fault(token, "rate_limited", count=count, retry_after=retry_after)

    async def slow(self, token: str, delay_ms: int) -> None:
        """Every push to ``token`` waits ``delay_ms`` before its answer."""
        await self.set_fault(token, "slow", delay_ms=delay_ms)

    async def error(self, token: str, status: int, reason: str = "", count: int = 1) -> None:
        """The next ``count`` pushes answer ``status`` with this APNs reason / FCM errorCode.

        E.g. ``error(t, 500, "InternalServerError")`` (APNs), ``error(t, 403,
        "SENDER_ID_MISMATCH")`` or ``error(t, 401, "THIRD_PARTY_AUTH_ERROR")`` (FCM); an
        empty reason gives an FCM error without an FcmError detail.
        """
        await self._call(
            "POST",
            "faults",
            {"token": token, "kind": "error", "status": status, "reason": reason, "count": count},
        )

    async def clear_faults(self, token: str | None = None) -> None:
        await self._call("DELETE", "faults" if token is None else f"faults/{token}")

    # latency ---------------------------------------------------------------------------

    async def latency(self) -> dict[str, Any]:
        """The latency profile: ``{"fcm": {"min_ms", "max_ms"}, ..., "profile": "fcm=30-60",
        "distribution": "uniform"}``."""
        result: dict[str, Any] = await self._call("GET", "latency")
        return result

    async def set_latency(self, profile: str) -> dict[str, Any]:
        """Every push answer of a platform waits per ``profile`` (``fcm=30-60,apns=20-80``,
        ``real``, ``none``): see :mod:`emulator.latency`. A bad profile is a 400."""
        result: dict[str, Any] = await self._call("POST", "latency", {"profile": profile})
        return result

    async def reset_latency(self) -> dict[str, Any]:
        """Back to the profile the emulator started with."""
        result: dict[str, Any] = await self._call("DELETE", "latency")
        return result

    # auth ------------------------------------------------------------------------------

    async def set_auth(
        self,
        *,
        expire_access_tokens: bool = False,
        reject_fcm: int | None = None,
        reject_apns: int | None = None,
        reject_token: int | None = None,
        token_lifetime: int | None = None,
    ) -> dict[str, Any]:
        """Auth switches for token-refresh tests; ``None`` leaves a switch as it is."""
        body: dict[str, Any] = {"expire_access_tokens": expire_access_tokens}
        for name, value in (
            ("reject_fcm", reject_fcm),
            ("reject_apns", reject_apns),
            ("reject_token", reject_token),
            ("token_lifetime", token_lifetime),
        ):
            if value is not None:
                body[name] = value
        result: dict[str, Any] = await self._call("POST", "auth", body)
        return result

    async def expire_access_tokens(self) -> None:
        """Every FCM access token issued so far is now expired (next send: 401)."""
        await self.set_auth(expire_access_tokens=True)

    # credentials (several FCM projects and APNs teams) -----------------------------------

    async def add_fcm_project(
        self, project_id: str, *, client_email: str | None = None
    ) -> dict[str, Any]:
        """A new service-account JSON (as a dict) for ``project_id``, registered now.

        Asking again for the same project gives another service account of it (a
        replacement key: it is not revoked even if the older ones are).
        """
        body: dict[str, Any] = {"project_id": project_id}
        if client_email is not None:
            body["client_email"] = client_email
        result: dict[str, Any] = await self._call("POST", "fcm/projects", body)
        return result

    async def add_apns_key(
        self,
        team_id: str | None = None,
        key_id: str | None = None,
        topics: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new APNs key: ``{team_id, key_id, topics, key_pem}`` (``key_pem``: the .p8).

        Ids left out are made up (10 characters, like Apple's); ``topics`` default to the
        emulator's default topic. A key id already registered is a 409 (HTTPStatusError).
        """
        body: dict[str, Any] = {}
        for name, value in (("team_id", team_id), ("key_id", key_id), ("topics", topics)):
            if value is not None:
                body[name] = value
        result: dict[str, Any] = await self._call("POST", "apns/keys", body)
        return result

    async def credentials(self) -> dict[str, Any]:
        """``{"fcm": [...], "apns": [...]}``: every credential and its faults, no secrets."""
        result: dict[str, Any] = await self._call("GET", "credentials")
        return result

    async def _fcm_fault(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"fcm/projects/{project_id}/faults", body)
        return result

    async def revoke_fcm(self, project_id: str, key_id: str | None = None) -> int:
        """Revoke the project's service accounts so far (or the one with ``key_id``): the
        token endpoint answers 400 invalid_grant, their tokens get 401 UNAUTHENTICATED."""
        body: dict[str, Any] = {"kind": "revoked"}
        if key_id is not None:
            body["key_id"] = key_id
        return int((await self._fcm_fault(project_id, body))["revoked"])

    async def refuse_fcm_tokens(
        self, project_id: str, error: str = "invalid_grant", status: int = 400
    ) -> None:
        """The token endpoint refuses the project's assertions (``{"error": error}`` with
        ``status``; e.g. 503 temporarily_unavailable); tokens already minted still work."""
        await self._fcm_fault(
            project_id, {"kind": "token_refused", "error": error, "status": status}
        )

    async def throttle_fcm(
        self, project_id: str, retry_after: int = 1, count: int | None = None
    ) -> None:
        """Every push of the project (or the next ``count``) answers 429 QUOTA_EXCEEDED
        with ``Retry-After``; other projects are unaffected."""
        body: dict[str, Any] = {"kind": "rate_limited", "retry_after": retry_after}
        await self._fcm_fault(project_id, body if count is None else {**body, "count": count})

    async def fail_fcm(
        self, project_id: str, status: int, reason: str = "", count: int | None = None
    ) -> None:
        """Every push of the project (or the next ``count``) answers ``status`` with FCM
        errorCode ``reason`` (e.g. 401 THIRD_PARTY_AUTH_ERROR, 403 ""); until healed."""
        body: dict[str, Any] = {"kind": "error", "status": status, "reason": reason}
        await self._fcm_fault(project_id, body if count is None else {**body, "count": count})

    async def heal_fcm(self, project_id: str) -> None:
        """Clear the project's faults and revocations."""
        await self._call("DELETE", f"fcm/projects/{project_id}/faults")

    async def _apns_fault(self, key_id: str, body: dict[str, Any]) -> None:
        await self._call("POST", f"apns/keys/{key_id}/faults", body)

    async def revoke_apns(self, key_id: str) -> None:
        """Pushes signed with this key answer 403 InvalidProviderToken."""
        await self._apns_fault(key_id, {"kind": "revoked"})

    async def throttle_apns(
        self, key_id: str, retry_after: int = 1, count: int | None = None
    ) -> None:
        """Every push under this key (or the next ``count``) answers 429 TooManyRequests."""
        body: dict[str, Any] = {"kind": "rate_limited", "retry_after": retry_after}
        await self._apns_fault(key_id, body if count is None else {**body, "count": count})

    async def fail_apns(
        self, key_id: str, status: int, reason: str, count: int | None = None
    ) -> None:
        """Every push under this key (or the next ``count``) answers ``status``/``reason``."""
        body: dict[str, Any] = {"kind": "error", "status": status, "reason": reason}
        await self._apns_fault(key_id, body if count is None else {**body, "count": count})

    async def heal_apns(self, key_id: str) -> None:
        """Clear the key's faults and revocation."""
        await self._call("DELETE", f"apns/keys/{key_id}/faults")

    # counting --------------------------------------------------------------------------

    async def summary(self) -> dict[str, Any]:
        """``{accepted, unique, duplicates, rejected, token_requests, by_platform,
        by_credential}``; ``by_credential`` is ``{"fcm": {project_id: {accepted, rejected,
        token_requests}}, "apns": {"TEAM/KEY": {accepted, rejected}}}``."""
        result: dict[str, Any] = await self._call("GET", "summary")
        return result

    async def pushed(self) -> int:
        """Distinct notification ids received so far (the summary's ``unique``)."""
        return int((await self.summary())["unique"])

    async def delivery(self, notification_id: str) -> dict[str, Any] | None:
        """``{id, count, first_received_at, last_received_at, platform, credential}`` or
        ``None``; ``credential`` is the FCM project id or APNs ``TEAM/KEY`` of its last push."""
        result: dict[str, Any] | None = await self._call("GET", f"deliveries/{notification_id}")
        return result

    async def deliveries(self, skip: int = 0) -> dict[str, list[Any]]:
        """Bulk export: ``{id: [count, first_received_at]}``, past the first ``skip`` ids."""
        route = f"deliveries?skip={skip}" if skip else "deliveries"
        result: dict[str, list[Any]] = await self._call("GET", route)
        return result

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last accepted pushes, oldest first (headers without authorization, payload)."""
        response = await self._client.get("requests", params={"limit": limit})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result
