"""Running the emulator: ``notifier emulator [serve] --keys DIR`` and ``notifier emulator keys``.

Serving uses granian (Rust HTTP/1.1 + HTTP/2 + TLS) embedded in this process, one event
loop and one :class:`~emulator.state.EmulatorState`, so counting needs no sharing.
SIGTERM or SIGINT stops it. ``--public-url`` is the URL other machines or containers dial
(``https://emulator:8443`` in Docker Compose); ``--env-dir`` is where they mount ``--keys``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from emulator.app import EmulatorApp
from emulator.keys import KeySet, check_env_dir, ensure_keys
from emulator.latency import DISTRIBUTION, LatencyProfile
from emulator.state import EmulatorState
from emulator.tls import public_url
from notifier import eventloop

DEFAULT_PORT = 8443
STOP_GRACE_SECONDS = 1.0
# SETTINGS_MAX_CONCURRENT_STREAMS: 1000 is what APNs advertises once a connection is
# authorized; Google's front ends advertise 100 (--max-streams 100 to see FCM's limit)
MAX_CONCURRENT_STREAMS = 1000
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_PUBLIC_URL_HELP = "URL clients use, https://HOST[:PORT]; in notifier.env, token_uri, the cert"
_ENV_DIR_HELP = "where readers of notifier.env mount the keys directory (default: the directory)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier emulator",
        description="Local FCM and APNs stand-ins (TLS, HTTP/2) with fault injection.",
    )
    parser.add_argument("--keys", type=Path, required=True, help="credentials directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--token-lifetime", type=int, default=3600, help="FCM access token lifetime, seconds"
    )
    parser.add_argument("--public-url", help=f"{_PUBLIC_URL_HELP} (default https://HOST:PORT)")
    parser.add_argument("--env-dir", type=Path, help=_ENV_DIR_HELP)
    parser.add_argument(
        "--latency",
        default="none",
        metavar="PROFILE",
        help="delay push answers: fcm=30-60,apns=20-80 (ms, uniform), real, none (default)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=MAX_CONCURRENT_STREAMS,
        help=f"HTTP/2 stream limit advertised (default {MAX_CONCURRENT_STREAMS})",
    )
    return parser


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier emulator keys",
        description="Only write throwaway credentials and notifier.env, then exit.",
    )
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument(
        "--public-url",
        "--endpoint",
        dest="public_url",
        default=f"https://127.0.0.1:{DEFAULT_PORT}",
        help=_PUBLIC_URL_HELP,
    )
    parser.add_argument("--env-dir", type=Path, help=_ENV_DIR_HELP)
    return parser


def default_public_url(host: str, port: int) -> str:
    """``https://HOST:PORT``, with 127.0.0.1 for a wildcard listen address."""
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` naming the port if nothing may listen on ``host:port`` right now.

    granian binds with SO_REUSEPORT, so it would share a port with another SO_REUSEPORT
    server (both answering, at random) instead of failing: bind a plain socket first.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(exc.errno, f"port {port} on {host} is already in use") from None
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _serve(
    app: EmulatorApp, keys: KeySet, host: str, port: int, max_streams: int = MAX_CONCURRENT_STREAMS
) -> None:
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP2Settings
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        http=HTTPModes.auto,
        websockets=False,
        backlog=2048,
        backpressure=4096,
        http2_settings=HTTP2Settings(max_concurrent_streams=max_streams),
        ssl_cert=keys.cert_file,
        ssl_key=keys.cert_key_file,
        ssl_protocol_min=SSLProtocols.tls12,
        log_enabled=False,
    )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # granian waits for open keep-alive connections (provider clients hold them for
        # hours): give in-flight requests a moment, then leave without waiting for them.
        server.signal_handler_interrupt()  # type: ignore[no-untyped-call]
        loop.call_later(STOP_GRACE_SECONDS, os._exit, 0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await server.serve()


def serve(
    keys_dir: Path,
    host: str,
    port: int,
    token_lifetime: int = 3600,
    *,
    public: str | None = None,
    env_dir: Path | None = None,
    latency: LatencyProfile | None = None,
    max_streams: int = MAX_CONCURRENT_STREAMS,
) -> None:
    """Create missing credentials, then serve until SIGTERM/SIGINT (blocking).

    ``public`` is the URL clients use (default :func:`default_public_url`); ``OSError``
    when the port is taken, ``ValueError`` for a bad ``public`` or ``env_dir``.
    """
    endpoint = public_url(public or default_public_url(host, port))
    check_env_dir(env_dir)
    check_port_free(host, port)
    keys = ensure_keys(keys_dir, endpoint, env_dir=env_dir)
    app = EmulatorApp(keys, EmulatorState(token_lifetime=token_lifetime, latency=latency))
    print(f"emulator serving {endpoint}  (settings: set -a; . {keys.env_file})", flush=True)
    if latency:
        print(f"emulator latency profile: {latency} ms ({DISTRIBUTION})", flush=True)
    try:
        eventloop.run(_serve(app, keys, host, port, max_streams))
    except RuntimeError as exc:  # granian's bind failed after all (a race with another)
        # granian appends a Rust backtrace to its message: the first line says it all
        reason = (str(exc).splitlines() or ["failed"])[0]
        print(f"notifier emulator: cannot serve on {host}:{port}: {reason}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    # granian's Rust threads may still hold Python callbacks: interpreter finalization
    # would make them panic, and there is nothing left to clean up.
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    """Entry point of ``notifier emulator``; returns the exit code."""
    logging.getLogger("granian").setLevel(logging.WARNING)
    if argv[:1] == ["keys"]:
        args = _keys_parser().parse_args(argv[1:])
        try:
            keys = ensure_keys(args.dir, args.public_url, env_dir=args.env_dir)
        except ValueError as exc:
            return _fail(exc, 2)
        print(keys.env_file)
        return 0
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        latency = LatencyProfile.parse(args.latency)
    except ValueError as exc:
        return _fail(ValueError(f"--latency: {exc}"), 2)
    if not 1 <= args.max_streams <= 100_000:
        return _fail(ValueError("--max-streams must be 1..100000"), 2)
    try:
        serve(
            args.keys,
            args.host,
            args.port,
            args.token_lifetime,
            public=args.public_url,
            env_dir=args.env_dir,
            latency=latency,
            max_streams=args.max_streams,
        )
    except ValueError as exc:
        return _fail(exc, 2)
    except OSError as exc:
        return _fail(exc, 1)
    return 0


def _fail(exc: Exception, code: int) -> int:
    detail = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        detail = exc.strerror  # without the "[Errno N]" prefix
    print(f"notifier emulator: {detail}", file=sys.stderr)
    return code
