"""Local FCM and APNs stand-ins for tests and load tests; never imported by the product.

``notifier emulator --keys DIR`` serves, on one TLS port, the FCM OAuth2 token endpoint,
FCM ``messages:send`` and APNs ``/3/device/{token}`` (HTTP/2), plus a control API for
fault injection and delivery counting (see :mod:`emulator.admin`). Tests start it with
:func:`emulator.testing.run_emulator`; :class:`emulator.control.EmulatorControl` drives it.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """``notifier emulator [serve] --keys DIR ...`` or ``notifier emulator keys ...``."""
    from emulator.server import main as server_main

    return server_main(argv)


__all__ = ["main"]
