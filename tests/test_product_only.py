"""The product (notifier/, api/, workers/) never imports the tooling: the emulator, the load
generator, the tools package, or their extras' libraries. What the Docker image installs
(the runtime dependencies and the emulator extra) is then all the product needs, and the
``notifier`` command says which extra to install when a tool is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CORE = ("notifier", "api", "workers")
TOOLING = ("emulator", "loadtest", "notifier_tools")
# Libraries only the extras bring (tools, bench, dev): never loaded by the product.
EXTRAS_ONLY = ("psutil", "rich", "locust", "httpx", "google", "granian", "trustme")
# structlog imports rich by itself when it is installed (for its console renderer)
NOT_LOADED = TOOLING + tuple(name for name in EXTRAS_ONLY if name != "rich")
# The CLI's dispatch to the tools, behind its check that their extra is installed.
ALLOWED = {("notifier/cli.py", "_pass_through")}


def _imports(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(enclosing function or "", module imported, line) for each import in ``tree``."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.Import):
                found.extend((where, alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((where, child.module, child.lineno))
            visit(child, inner)

    visit(tree, "")
    return found


def _core_files() -> list[Path]:
    return sorted(p for package in CORE for p in (ROOT / package).rglob("*.py"))


def test_core_source_imports_no_tooling() -> None:
    offending = []
    for path in _core_files():
        rel = path.relative_to(ROOT).as_posix()
        for where, module, line in _imports(ast.parse(path.read_text(), rel)):
            top = module.split(".")[0]
            if top in TOOLING + EXTRAS_ONLY and (rel, where) not in ALLOWED:
                offending.append(f"{rel}:{line} imports {module}")
    assert not offending, "\n".join(offending)


def test_importing_every_core_module_loads_no_tooling() -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in _core_files()
        if p.name != "__main__.py"
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {NOT_LOADED!r})\n"
        "print(' '.join(loaded))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"the core loaded tooling: {done.stdout}"


@pytest.mark.parametrize(
    ("command", "blocked", "extra"),
    [
        (["stack", "status"], "psutil", "tools"),
        (["bench", "--help"], "rich", "tools"),
        (["emulator", "--help"], "granian", "emulator"),
    ],
)
def test_tool_without_its_extra_says_which_to_install(
    command: list[str], blocked: str, extra: str
) -> None:
    # a module set to None in sys.modules is one Python cannot import (as if not installed)
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from notifier.cli import main\n"
        f"raise SystemExit(main({command!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"notifier {command[0]} needs the {extra} extra: pip install 'notifier[{extra}]'"
    )
