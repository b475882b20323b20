"""The emulator's RSGI application: routes each request to APNs, FCM or the control API.

One object serves everything on one TLS port (ALPN h2 and http/1.1): ``/3/device/...``
(APNs, HTTP/2 only), ``/token`` and ``/v1/projects/...`` (FCM), ``/_emulator/...`` (control).
"""

from __future__ import annotations

import asyncio
from typing import Any

from emulator import admin
from emulator.apns import PREFIX as APNS_PREFIX
from emulator.apns import ApnsService
from emulator.credentials import CREDENTIALS_FILE, CredentialRegistry
from emulator.fcm import FcmService
from emulator.keys import KeySet
from emulator.state import EmulatorState

_NOT_FOUND = (404, [("content-type", "application/json")], b'{"reason":"BadPath"}')


class EmulatorApp:
    """The RSGI callable (``__rsgi__``) holding the state of one emulator process."""

    def __init__(self, keys: KeySet, state: EmulatorState) -> None:
        self.keys = keys
        self.state = state
        # the keys directory's credentials are the defaults; more come via the control API
        saved = keys.directory / CREDENTIALS_FILE
        self.credentials = CredentialRegistry(keys.fcm_token_uri, saved)
        self.credentials.add_fcm_account(
            keys.fcm_project_id,
            keys.fcm_client_email,
            keys.fcm_private_key_id,
            keys.fcm_public_key(),
        )
        self.credentials.add_apns_key(
            keys.apns_team_id, keys.apns_key_id, keys.apns_public_key(), {keys.apns_topic}
        )
        self.credentials.load()  # those added by earlier runs, which workers may still hold
        self.apns = ApnsService(state, self.credentials)
        self.fcm = FcmService(state, self.credentials)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        body: bytes = await protocol()
        path: str = scope.path
        method: str = scope.method
        headers = scope.headers
        if path.startswith(APNS_PREFIX):
            status, out, payload = await self.apns.handle(
                method, path, scope.http_version, headers, body, scope.client
            )
            await self._provider_latency("apns")
        elif path.startswith("/v1/projects/"):
            status, out, payload = await self.fcm.send(method, path, headers, body, scope.client)
            await self._provider_latency("fcm")
        elif path == "/token":
            status, out, payload = self.fcm.token(method, body)
        elif path.startswith(admin.PREFIX):
            status, out, payload = admin.handle(
                self.state, self.credentials, method, path, scope.query_string, body
            )
        else:
            status, out, payload = _NOT_FOUND
        protocol.response_bytes(status, out, payload)

    async def _provider_latency(self, platform: str) -> None:
        """Wait out the latency profile (:mod:`emulator.latency`) before a push's answer.

        A sleep in this request's task: other requests and streams go on meanwhile.
        """
        delay = self.state.latency.delay(platform)
        if delay:
            await asyncio.sleep(delay)
