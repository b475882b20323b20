"""``notifier prune`` as ops run it: a real process against a real database, on each store."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

import pytest

from notifier.models import Status, utcnow
from notifier.settings import load_settings
from notifier.store import open_store
from tests.store.conftest import insert
from tests.store.test_contract_retention import made_at


async def run_prune(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "prune",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("days", ["0", "-3", "1.5", "nan", "forty", "40000"])
async def test_a_bad_age_stops_with_one_line_naming_the_option(days: str) -> None:
    code, out, err = await run_prune("--older-than-days", days)
    assert code == 2 and out == ""
    assert "--older-than-days" in err.strip().splitlines()[-1]


async def test_prune_deletes_old_final_notifications_and_says_how_many(
    fresh_store_url: str,
) -> None:
    store = await open_store(load_settings({"NOTIFIER_STORE_URL": fresh_store_url}))
    try:
        now = utcnow()
        old_sent = made_at(now - timedelta(days=45), status=Status.SENT)
        old_pending = made_at(now - timedelta(days=45))
        new_sent = made_at(now - timedelta(days=2), status=Status.SENT)
        await insert(store, old_sent, old_pending, new_sent)

        env = {"NOTIFIER_STORE_URL": fresh_store_url}
        code, out, err = await run_prune("--older-than-days", "30", "--batch", "1", env=env)
        assert code == 0, err
        assert out.strip() == "deleted 1 final notifications older than 30 days"
        assert await store.get(old_sent.id) is None
        assert await store.get(old_pending.id) is not None
        assert await store.get(new_sent.id) is not None
    finally:
        await store.close()
