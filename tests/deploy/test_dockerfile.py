"""The Dockerfile, read without Docker: multi-stage slim build, runtime deps only, non-root,
a health check that really probes /health, and a build context that holds what it copies."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from .helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _healthcheck_argv() -> list[str]:
    (rest,) = [rest for keyword, rest in _instructions() if keyword == "HEALTHCHECK"]
    argv: list[str] = json.loads(rest[rest.index("CMD") + 3 :].strip())
    return argv


def test_multi_stage_slim_python_non_root_entrypoint() -> None:
    instructions = _instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) == 2
    assert all(f.startswith("python:3.11-slim") for f in froms)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["notifier"]') in instructions
    exposed = {p for keyword, rest in instructions if keyword == "EXPOSE" for p in rest.split()}
    assert {"8080", "9100", "8443"} <= exposed


def test_runtime_installs_only_runtime_dependencies() -> None:
    installs = [rest for keyword, rest in _instructions() if keyword == "RUN" and "pip" in rest]
    assert any('"notifier[emulator]"' in r and "--no-index" in r for r in installs)
    assert not any("dev" in re.findall(r"\[([a-z,]+)\]", r)[0] for r in installs if "[" in r)


def _dockerignore_allows(path: str) -> bool:
    allowed = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_build_context_holds_every_copied_source() -> None:
    for keyword, rest in _instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
            assert _dockerignore_allows(source), f"COPY {source}: excluded by .dockerignore"
    for package in ("notifier", "api", "workers", "emulator"):
        assert _dockerignore_allows(package)
    assert not _dockerignore_allows("tests")
    assert not _dockerignore_allows(".venv")


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _run_healthcheck(port: int) -> int:
    argv = _healthcheck_argv()
    assert argv[0] == "python"
    env = {**os.environ, "HEALTHCHECK_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True).returncode


def test_healthcheck_passes_on_200_and_fails_otherwise(health_server: HTTPServer) -> None:
    port = health_server.server_address[1]
    _Health.status = 200
    assert _run_healthcheck(port) == 0
    _Health.status = 503
    assert _run_healthcheck(port) != 0
    health_server.shutdown()
    health_server.server_close()
    assert _run_healthcheck(port) != 0


def test_the_mongodb_stand_in_is_never_shipped() -> None:
    """SecantusDB (GPL-2.0) is a test tool that scripts/services.sh installs in a virtualenv
    of its own: no dependency list, extra or image instruction may name it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert not [r for r in requirements if "secantus" in r.lower()]
    assert "secantus" not in DOCKERFILE.lower()
    assert not _dockerignore_allows("scripts")
    assert not _dockerignore_allows(".run")
