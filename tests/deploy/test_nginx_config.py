"""``nginx -t`` accepts the repo's nginx template as a local run renders it and as the
Docker deployment's envsubst step fills it (compose's NGINX_* values)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from api.schemas import MAX_BATCH_BODY_BYTES, MAX_BODY_BYTES
from notifier_tools.nginxconf import TEMPLATE, render_nginx_config, substitute, upstream_servers

from .helpers import load_compose

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _nginx_t(config: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    path = prefix / "nginx.conf"
    path.write_text(config)
    return subprocess.run(
        [NGINX, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nginx_accepts_the_local_rendering(tmp_path: Path) -> None:
    config = render_nginx_config(18080, ["127.0.0.1:18081", "127.0.0.1:18082"], tmp_path)
    result = _nginx_t(config, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_log_files_are_private(tmp_path: Path) -> None:
    """nginx creates its logs 0644; an operator's fellow users must not read them."""
    (tmp_path / "access.log").write_text("")
    (tmp_path / "access.log").chmod(0o644)  # left by an older run
    config = render_nginx_config(18080, ["127.0.0.1:18081"], tmp_path)
    result = _nginx_t(config, tmp_path)  # nginx opens (and would create) both logs
    assert result.returncode == 0, result.stderr
    for name in ("error.log", "access.log"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


@pytest.fixture(scope="module")
def compose_nginx_env() -> dict[str, str]:
    environment: dict[str, str] = load_compose()["services"]["nginx"]["environment"]
    return environment


def test_compose_fills_every_template_variable(compose_nginx_env: dict[str, str]) -> None:
    variables = set(re.findall(r"\$\{(NGINX_[A-Z0-9_]+)\}", TEMPLATE.read_text()))
    assert variables <= set(compose_nginx_env)
    assert compose_nginx_env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert re.match(compose_nginx_env["NGINX_ENVSUBST_FILTER"], "NGINX_LISTEN")
    services = load_compose()["services"]
    apis = sorted(name for name in services if name.startswith("api-"))
    expected = upstream_servers([f"{name}:8080" for name in apis])
    assert compose_nginx_env["NGINX_API_SERVERS"] == expected


def test_nginx_accepts_the_docker_rendering(
    compose_nginx_env: dict[str, str], tmp_path: Path
) -> None:
    """Compose's values, with the API host names pointed at loopback (no Docker DNS here)
    and the run folder in a temp dir (the image's /var/cache/nginx)."""
    values = {name: value for name, value in compose_nginx_env.items() if name != "NGINX_RUN_DIR"}
    values["NGINX_RUN_DIR"] = str(tmp_path)
    values["NGINX_API_SERVERS"] = re.sub(r"api-\d+:", "127.0.0.1:", values["NGINX_API_SERVERS"])
    values["NGINX_LISTEN"] = values["NGINX_LISTEN"].replace("0.0.0.0", "127.0.0.1")
    result = _nginx_t(substitute(TEMPLATE.read_text(), values), tmp_path)
    assert result.returncode == 0, result.stderr


def _blocks(config: str) -> dict[str, list[str]]:
    """Each ``location``'s directives, keyed by its head line, and under ``"outside"`` every
    directive outside a location (the server level among them)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    outside: list[str] = []
    for line in (raw.strip() for raw in config.splitlines()):
        if line.startswith("location "):
            current = blocks.setdefault(line.removesuffix("{").strip(), [])
        elif line == "}":
            current = None
        elif line and not line.startswith("#"):
            (current if current is not None else outside).append(line)
    blocks["outside"] = outside
    return blocks


@pytest.fixture(scope="module")
def blocks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    prefix = tmp_path_factory.mktemp("nginx-blocks")
    return _blocks(render_nginx_config(18080, ["127.0.0.1:18081"], prefix))


def test_every_proxying_location_proxies_alike(blocks: dict[str, list[str]]) -> None:
    """Proxy settings live at server level: a location adding its own proxy_* directive
    (one proxy_set_header drops every inherited header) would proxy differently."""
    proxying = {
        head: lines for head, lines in blocks.items() if any("proxy_pass" in x for x in lines)
    }
    assert set(proxying) == {"location /", "location = /v1/notifications/batch"}
    for lines in proxying.values():
        assert [x for x in lines if x.startswith("proxy_")] == ["proxy_pass http://notifier_api;"]
    assert "proxy_set_header X-Request-Id $request_id;" in blocks["outside"]


def test_body_limits_match_the_app(blocks: dict[str, list[str]]) -> None:
    """The batch location's limit is the app's batch limit; every other body the app's
    general one (the 413 details naming them are checked against nginx in tests/api)."""
    assert f"client_max_body_size {MAX_BODY_BYTES // 1024}k;" in TEMPLATE.read_text()
    batch = blocks["location = /v1/notifications/batch"]
    assert f"client_max_body_size {MAX_BATCH_BODY_BYTES // (1024 * 1024)}m;" in batch
