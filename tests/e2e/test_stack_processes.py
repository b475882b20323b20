"""The stack's process handling: PID files name exactly our process; stop leaves nothing."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import psutil
import pytest

from notifier_tools.procs import check_health, free_port
from notifier_tools.stack.processes import (
    PidRecord,
    StackError,
    kill,
    load_records,
    process_of,
    read_env_file,
    spawn,
    stop,
    wait_healthy,
)


def _http_server(tmp_path: Path) -> PidRecord:
    port = free_port()
    return spawn(
        "web-1",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        env={"PATH": "/usr/bin:/bin"},
        port=port,
        health_url=f"http://127.0.0.1:{port}/",
        logs_dir=tmp_path / "logs",
        pids_dir=tmp_path / "pids",
        cwd=tmp_path,
    )


def test_spawned_process_is_recorded_waited_on_and_stopped(tmp_path: Path) -> None:
    record = _http_server(tmp_path)
    wait_healthy(record, timeout=20)
    assert check_health(record.health_url)
    assert load_records(tmp_path / "pids") == [record]
    assert stop(record, tmp_path / "pids") == "stopped"
    assert not psutil.pid_exists(record.pid) or process_of(record) is None
    assert load_records(tmp_path / "pids") == []
    assert (tmp_path / "logs" / "web-1.log").is_file()


def test_component_logs_are_private(tmp_path: Path) -> None:
    """A component's log is readable by its owner only, even where an older run left 0644."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "web-1.log").write_text("older run\n")
    (tmp_path / "logs" / "web-1.log").chmod(0o644)
    record = _http_server(tmp_path)
    try:
        assert Path(record.log).stat().st_mode & 0o777 == 0o600
        assert Path(record.log).read_text().startswith("older run")  # appended to, not lost
    finally:
        stop(record, tmp_path / "pids")


def test_a_recycled_pid_is_never_taken_for_ours(tmp_path: Path) -> None:
    record = _http_server(tmp_path)
    try:
        wait_healthy(record, timeout=20)
        impostor = dataclasses.replace(record, create_time=record.create_time - 100)
        assert process_of(impostor) is None
        assert stop(impostor, tmp_path / "pids") == "not running"
        assert process_of(record) is not None  # the real process was left alone
    finally:
        stop(record, tmp_path / "pids")


def test_a_process_that_ignores_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    record = spawn(
        "stubborn",
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        port=0,
        health_url="tcp://127.0.0.1:1",
        logs_dir=tmp_path / "logs",
        pids_dir=tmp_path / "pids",
    )
    proc = psutil.Process(record.pid)
    deadline = 50
    while not proc.children() and deadline:
        psutil.wait_procs([proc], timeout=0.1)
        deadline -= 1
    children = proc.children(recursive=True)
    assert stop(record, tmp_path / "pids", timeout=1.0) == "killed"
    for p in [proc, *children]:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE


def test_a_component_that_exits_at_start_fails_with_its_log(tmp_path: Path) -> None:
    record = spawn(
        "broken",
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
        env={"PATH": "/usr/bin:/bin"},
        port=0,
        health_url="http://127.0.0.1:1/",
        logs_dir=tmp_path / "logs",
        pids_dir=tmp_path / "pids",
    )
    with pytest.raises(StackError, match="bad config"):
        wait_healthy(record, timeout=20)
    stop(record, tmp_path / "pids")


def test_kill_reports_whether_the_process_was_alive(tmp_path: Path) -> None:
    record = _http_server(tmp_path)
    assert kill(record) is True
    assert kill(record) is False
    stop(record, tmp_path / "pids")


def test_env_file_lines_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "notifier.env"
    path.write_text(
        "# comment\nNOTIFIER_A=1\nexport NOTIFIER_B='two words'\n\nNOTIFIER_C=\"x=y\"\n"
    )
    assert read_env_file(path) == {
        "NOTIFIER_A": "1",
        "NOTIFIER_B": "two words",
        "NOTIFIER_C": "x=y",
    }
