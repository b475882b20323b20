"""Render ``nginx/nginx.conf.template`` (the one nginx config) for a local run or a test.

The template's ``${NGINX_*}`` variables are the ones the official nginx image's envsubst
fills in a container; here they are filled from arguments instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "nginx" / "nginx.conf.template"
MAX_FAILS = 3
FAIL_TIMEOUT_SECONDS = 5
_VARIABLE = re.compile(r"\$\{(NGINX_[A-Z0-9_]+)\}")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


LOG_FILES = ("error.log", "access.log")


def _create_private(path: Path) -> None:
    """Create ``path`` at 0600 (or make it so): nginx appends to an existing log file and
    keeps its mode, where it would create a new one 0644."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def upstream_servers(api_addresses: Sequence[str]) -> str:
    """The ``server`` lines of the upstream block (the value of ``NGINX_API_SERVERS``)."""
    if not api_addresses:
        raise ValueError("at least one API address is needed")
    for address in api_addresses:
        if not _ADDRESS.match(address):
            raise ValueError(f"not a host:port address: {address!r}")
    return " ".join(
        f"server {a} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT_SECONDS}s;"
        for a in api_addresses
    )


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``${NGINX_*}``; a variable without a value is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for ${{{name}}} in the nginx template")
        return values[name]

    return _VARIABLE.sub(one, template)


def render_nginx_config(listen_port: int, api_addresses: list[str], prefix: Path) -> str:
    """The config listening on 127.0.0.1:``listen_port`` in front of ``api_addresses``.

    ``prefix`` is a writable run folder (created if missing) for the pid file, logs and
    temp files; start nginx with ``-p prefix -e prefix/error.log -g 'daemon off;'``.
    """
    if not 0 < listen_port < 65536:
        raise ValueError(f"bad listen port: {listen_port}")
    prefix = prefix.resolve()
    prefix.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        _create_private(prefix / name)
    values = {
        "NGINX_LISTEN": f"127.0.0.1:{listen_port}",
        "NGINX_API_SERVERS": upstream_servers(api_addresses),
        "NGINX_RUN_DIR": str(prefix),
    }
    return substitute(TEMPLATE.read_text(), values)
