"""The HTTP edge of a real ``notifier api`` process: what arrives before a handler can judge it.

Compressed bodies, requests aiohttp's parser refuses (a header too large, too many
headers), and bodies that never finish arriving. Each is answered with a problem document
and logged as one line; none is a 500 or a traceback. Raw sockets, since an HTTP client
would refuse to send most of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from emulator.testing import free_port
from notifier.apikeys import generate_key, hash_key
from notifier.broker import delete_queues
from notifier.models import utcnow
from notifier.settings import load_settings
from notifier.store import open_store
from tests.api.conftest import APNS_TOKEN
from tests.api.processes import spawn_api, stop, wait_healthy
from tests.conftest import AMQP_URL

BODY = orjson.dumps({"to": {"platform": "apns", "token": APNS_TOKEN}, "title": "Hi"})
BODY_TIMEOUT_SECONDS = 1.0


@dataclass
class Replica:
    port: int
    key: str
    log: Path

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # asked for (expect_close): the server closed the connection at once

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self
        doc: dict[str, Any] = orjson.loads(self.body)
        assert doc["status"] == self.status
        return doc


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replica(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replica]:
    env = {
        "NOTIFIER_STORE_URL": pg_url,
        "NOTIFIER_AMQP_URL": AMQP_URL,
        "NOTIFIER_QUEUE": f"test.{os.getpid()}.{secrets.token_hex(4)}",
    }
    settings = load_settings(env)
    store = await open_store(settings)
    key = generate_key()
    await store.add_api_key("edge", hash_key(key), utcnow())
    await store.close()
    log = tmp_path_factory.mktemp("edge") / "api.log"
    port = free_port()
    proc = spawn_api(
        settings, port, log, NOTIFIER_API_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_SECONDS)
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        yield Replica(port, key, log)
    finally:
        stop(proc)
        await delete_queues(settings)


async def _read_answer(
    reader: asyncio.StreamReader, timeout: float = 10.0, *, expect_close: bool = False
) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    closed = False
    if expect_close:  # it must close at once, not keep the connection for the rest
        with contextlib.suppress(TimeoutError):
            closed = await asyncio.wait_for(reader.read(1), 2.0) == b""
    return Answer(status, headers, body, closed)


async def _exchange(replica: Replica, raw: bytes, *, expect_close: bool = False) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await _read_answer(reader, expect_close=expect_close)
    finally:
        writer.close()


def _post(replica: Replica, body: bytes, **headers: str) -> bytes:
    lines = [
        "POST /v1/notifications HTTP/1.1",
        f"Host: 127.0.0.1:{replica.port}",
        f"Authorization: Bearer {replica.key}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _one_warning_line(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    entry: dict[str, Any] = orjson.loads(lines[0])
    assert entry["level"] == "warning", entry
    assert "Traceback" not in text and "exception" not in entry
    return entry


async def _logged_since(replica: Replica, offset: int) -> str:
    """What the replica logged after ``offset``, once it has logged anything."""
    deadline = time.monotonic() + 5
    while replica.log_size() == offset and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return replica.log_since(offset)


# -- compressed bodies ------------------------------------------------------------------------


async def test_a_gzip_body_is_accepted(replica: Replica) -> None:
    answer = await _exchange(replica, _post(replica, gzip.compress(BODY), Content_Encoding="gzip"))
    assert answer.status == 202, answer


async def test_a_body_that_is_not_gzip_is_a_400_problem(replica: Replica) -> None:
    offset = replica.log_size()
    answer = await _exchange(replica, _post(replica, BODY, Content_Encoding="gzip"))
    assert answer.status == 400, answer
    assert "gzip" in answer.problem()["detail"]
    assert "unhandled_error" not in replica.log_since(offset)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
async def test_an_unsupported_content_encoding_is_a_415_problem(
    replica: Replica, encoding: str
) -> None:
    offset = replica.log_size()
    answer = await _exchange(replica, _post(replica, BODY, Content_Encoding=encoding))
    assert answer.status == 415, answer
    problem = answer.problem()
    assert "Content-Encoding" in problem["detail"] and "gzip" in problem["detail"]
    assert answer.headers["accept-encoding"] == "gzip, deflate"
    assert "unhandled_error" not in replica.log_since(offset)


# -- requests the HTTP parser refuses --------------------------------------------------------


def _get_health(extra_headers: list[str]) -> bytes:
    lines = ["GET /health HTTP/1.1", "Host: x", *extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_header_too_large_is_a_431_problem_logged_as_one_warning(
    replica: Replica,
) -> None:
    offset = replica.log_size()
    secret = "s3cr3t-" + secrets.token_hex(8)
    raw = _get_health([f"X-Big: {secret}" + "x" * 9000])
    answer = await _exchange(replica, raw, expect_close=True)
    assert answer.status == 431, answer
    assert "8190" in answer.problem()["detail"]
    assert answer.closed
    logged = await _logged_since(replica, offset)
    entry = _one_warning_line(logged)
    assert entry["event"] == "bad_http_request" and entry["status"] == 431
    assert secret not in logged  # the offending bytes are never echoed or logged


async def test_too_many_headers_is_a_431_problem_logged_as_one_warning(replica: Replica) -> None:
    offset = replica.log_size()
    answer = await _exchange(replica, _get_health([f"X-H{i}: v" for i in range(200)]))
    assert answer.status == 431, answer
    assert "128" in answer.problem()["detail"]
    _one_warning_line(await _logged_since(replica, offset))


async def test_a_request_target_too_long_is_a_414_problem(replica: Replica) -> None:
    offset = replica.log_size()
    answer = await _exchange(replica, b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 414, answer
    assert "8190" in answer.problem()["detail"]
    _one_warning_line(await _logged_since(replica, offset))


async def test_a_broken_chunked_body_is_a_400_problem(replica: Replica) -> None:
    offset = replica.log_size()
    head = _post(replica, b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    answer = await _exchange(replica, head + b"zz\r\n{}\r\n0\r\n\r\n")
    assert answer.status == 400, answer
    assert answer.problem()["type"].endswith(("/bad-body", "/bad-request"))
    assert "Traceback" not in replica.log_since(offset)


async def test_a_malformed_request_line_is_a_400_problem(replica: Replica) -> None:
    offset = replica.log_size()
    answer = await _exchange(replica, b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert answer.status == 400, answer
    answer.problem()
    _one_warning_line(await _logged_since(replica, offset))


# -- bodies that never finish ----------------------------------------------------------------


async def _send_slowly(replica: Replica, head: bytes, chunks: list[bytes], gap: float) -> Answer:
    """Send ``head``, then each chunk ``gap`` seconds apart; the answer, however early."""
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    answer_task = asyncio.create_task(
        _read_answer(reader, timeout=BODY_TIMEOUT_SECONDS + 10, expect_close=True)
    )
    try:
        writer.write(head)
        for chunk in chunks:
            await asyncio.wait({answer_task}, timeout=gap)
            if answer_task.done() or writer.is_closing():
                break
            writer.write(chunk)
        return await answer_task
    finally:
        writer.close()


@pytest.mark.parametrize("gap", [30.0, 0.2], ids=["stalled", "trickled"])
async def test_a_body_that_does_not_arrive_in_time_is_a_408_problem(
    replica: Replica, gap: float
) -> None:
    """Headers then a stalled or trickled body: cut off after the body timeout."""
    raw = _post(replica, BODY)
    head, body = raw[: -len(BODY)], raw[-len(BODY) :]
    offset = replica.log_size()
    started = time.monotonic()
    answer = await _send_slowly(replica, head, [body[i : i + 1] for i in range(len(body))], gap)
    elapsed = time.monotonic() - started
    assert answer.status == 408, answer
    assert answer.problem()["type"].endswith("/request-timeout")
    assert answer.closed
    assert BODY_TIMEOUT_SECONDS <= elapsed < BODY_TIMEOUT_SECONDS + 3
    # Closed, so aiohttp is done with the request: it logged no error, no traceback.
    logged = replica.log_since(offset)
    assert '"level": "error"' not in logged and "Traceback" not in logged, logged
