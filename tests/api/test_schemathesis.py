"""Property-based run of schemathesis against a real API process: no 5xx, schema-true answers.

The schema is the one the app serves; every operation (OPTIONS included) gets a bounded
number of examples, schema-valid and schema-invalid, in about 20 s. Checks: no 5xx, every
status and content type documented, every answer true to its schema, OPTIONS' ``Allow``
true to the document, and a schema-valid request refused only for a limit the document
states in words (issue 13, item 7).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import openapi_document
from emulator.testing import free_port
from notifier.apikeys import generate_key, hash_key
from notifier.broker import delete_queues
from notifier.models import utcnow
from notifier.settings import load_settings
from notifier.store import open_store
from tests.api.processes import spawn_api, stop, wait_healthy
from tests.conftest import AMQP_URL

MAX_EXAMPLES = 15
# Where a schema-valid request may still be refused, each stated in the document's words:
# the payload sums (/), a user without an active device, the 30-day schedule window, a
# device token that does not keep its platform's rule, a credential's key that does not load
# (tests/api/test_schemathesis_admin.py).
DESCRIBED_REFUSALS = frozenset(
    {
        "/",
        "/to/user_id",
        "/scheduled_for",
        "/path/token",
        "/private_key",
        "/service_account/private_key",
        # the app's allowed APNs topics are the store's, not the schema's (stated in words)
        "/apns_topic",
    }
)


def _refusal_pointers(response: Any) -> set[str]:
    """Pointers of a 422 (or of the per-item errors of a batch), item prefixes cut."""
    body = response.json()
    problems = [r["error"] for r in body.get("results", []) if "error" in r] or [body]
    pointers = {e["pointer"] for p in problems for e in p.get("errors", [])}
    return {re.sub(r"^/notifications/\d+", "", p) or "/" for p in pointers}


@schemathesis.check
def refused_only_for_described_limits(
    ctx: CheckContext, response: Any, case: schemathesis.Case[Any]
) -> bool | None:
    """A schema-valid request is refused only where JSON Schema cannot say why."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    batch = response.status_code == 200 and "/batch" in case.path
    if response.status_code != 422 and not batch:
        return None
    undescribed = _refusal_pointers(response) - DESCRIBED_REFUSALS
    assert not undescribed, f"schema-valid but refused at {sorted(undescribed)}: {response.text}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    allow_header_conformance,
    refused_only_for_described_limits,
]

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live_api(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    env = {
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
    }
    api_settings = load_settings(env, api_rate_per_second=100_000, api_rate_burst=100_000)
    store = await open_store(api_settings)
    key = generate_key()
    await store.add_api_key("schemathesis", hash_key(key), utcnow())
    await store.close()
    port = free_port()
    proc = spawn_api(api_settings, port, tmp_path_factory.mktemp("api") / "api.log")
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
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any], live_api: dict[str, str]) -> None:
    response = case.call(
        base_url=live_api["base_url"],
        headers={"Authorization": f"Bearer {live_api['key']}"},
        timeout=10,
    )
    case.validate_response(response, checks=CHECKS)
