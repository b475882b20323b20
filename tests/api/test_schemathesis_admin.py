"""Schemathesis on the admin API with an admin key: no 5xx, schema-true answers, a
schema-valid credential refused only for a key that does not load (which the document
states in words). ``test_schemathesis.py`` runs every operation with an app's key, which
the admin routes refuse (403)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, settings

from api.openapi import openapi_document
from emulator.testing import free_port
from notifier.adminkeys import generate_admin_key
from notifier.apikeys import hash_key
from notifier.broker import delete_queues
from notifier.credentials.sealing import new_key
from notifier.models import utcnow
from notifier.settings import load_settings
from notifier.store import open_store
from tests.api.processes import spawn_api, stop, wait_healthy
from tests.api.test_schemathesis import CHECKS, MAX_EXAMPLES
from tests.conftest import AMQP_URL

schema = schemathesis.openapi.from_dict(openapi_document()).include(path_regex="^/v1/admin/")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin_api(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    env = {
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
    }
    api_settings = load_settings(env, api_rate_per_second=100_000, api_rate_burst=100_000)
    store = await open_store(api_settings)
    key = generate_admin_key()
    await store.add_admin_key(hash_key(key), utcnow())
    await store.close()
    port = free_port()
    log = tmp_path_factory.mktemp("admin-api") / "api.log"
    proc = spawn_api(api_settings, port, log, NOTIFIER_SECRETS_KEY=new_key())
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(f"{base_url}/health", proc)
        yield {"base_url": base_url, "key": key}
    finally:
        assert stop(proc) == 0, "the API did not stop cleanly on SIGTERM"
        await delete_queues(api_settings)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_admin_api_conforms_to_its_schema(
    case: schemathesis.Case[Any], admin_api: dict[str, str]
) -> None:
    response = case.call(
        base_url=admin_api["base_url"],
        headers={"Authorization": f"Bearer {admin_api['key']}"},
        timeout=10,
    )
    case.validate_response(response, checks=CHECKS)
