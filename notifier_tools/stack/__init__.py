"""``notifier stack``: the whole pipeline on one machine (no Docker), tracked by PID files."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point of ``notifier stack up|down|status``."""
    from notifier_tools.stack.cli import main as cli_main

    return cli_main(argv)
