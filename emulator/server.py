"""Running the emulator: ``notifier emulator [serve] --keys DIR`` and ``notifier emulator keys``.

Serving uses granian (Rust HTTP/1.1 + HTTP/2 + TLS) embedded in this process, one event
loop and one :class:`~emulator.state.EmulatorState`, so counting needs no sharing.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from emulator.app import EmulatorApp
from emulator.keys import KeySet, ensure_keys
from emulator.state import EmulatorState

DEFAULT_PORT = 8443
STOP_GRACE_SECONDS = 1.0
MAX_CONCURRENT_STREAMS = 1000  # what APNs advertises once a connection is authorized


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
    return parser


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier emulator keys",
        description="Only write throwaway credentials and notifier.env, then exit.",
    )
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--endpoint", default=f"https://127.0.0.1:{DEFAULT_PORT}")
    return parser


async def _serve(app: EmulatorApp, keys: KeySet, host: str, port: int) -> None:
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
        http2_settings=HTTP2Settings(max_concurrent_streams=MAX_CONCURRENT_STREAMS),
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


def serve(keys_dir: Path, host: str, port: int, token_lifetime: int = 3600) -> None:
    """Create missing credentials, then serve until SIGTERM/SIGINT (blocking)."""
    endpoint = f"https://{host}:{port}"
    keys = ensure_keys(keys_dir, endpoint)
    app = EmulatorApp(keys, EmulatorState(token_lifetime=token_lifetime))
    print(f"emulator serving {endpoint}  (settings: set -a; . {keys.env_file})", flush=True)
    asyncio.run(_serve(app, keys, host, port))
    # granian's Rust threads may still hold Python callbacks: interpreter finalization
    # would make them panic, and there is nothing left to clean up.
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    """Entry point of ``notifier emulator``; returns the exit code."""
    logging.getLogger("granian").setLevel(logging.WARNING)
    if argv[:1] == ["keys"]:
        args = _keys_parser().parse_args(argv[1:])
        keys = ensure_keys(args.dir, args.endpoint)
        print(keys.env_file)
        return 0
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        serve(args.keys, args.host, args.port, args.token_lifetime)
    except OSError as exc:
        print(f"notifier emulator: {exc}", file=sys.stderr)
        return 1
    return 0
