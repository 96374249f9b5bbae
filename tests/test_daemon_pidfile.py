"""The pidfile lock and the `doctune retrain` command that uses it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_proc import DaemonProcess, daemon_config, free_port
from ollama_fake import FakeOllama

from daemon.cli import main
from daemon.pidfile import (
    POINTER_NAME,
    DaemonAlreadyRunning,
    PidFile,
    read_running_pid,
    runtime_dir,
)
from pipeline.settings import PathsSettings, Settings


def test_pidfile_holds_our_pid_and_is_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "run" / "doctune.pid"
    with PidFile(path):
        assert path.read_text().strip() == str(os.getpid())
        assert read_running_pid(path) == os.getpid()
    assert not path.exists()
    assert read_running_pid(path) is None


def test_second_daemon_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "doctune.pid"
    with PidFile(path), pytest.raises(DaemonAlreadyRunning, match=str(os.getpid())):
        PidFile(path).__enter__()


def test_leftover_pidfile_without_a_lock_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "doctune.pid"
    path.write_text("12345\n")
    assert read_running_pid(path) is None
    with PidFile(path):  # a stale file does not block a new daemon
        assert read_running_pid(path) == os.getpid()


def test_runtime_dir_prefers_setting_then_env_then_state_dir(tmp_path: Path) -> None:
    s = Settings(paths=PathsSettings(state_dir=tmp_path / "state"))
    assert runtime_dir(s, {}) == tmp_path / "state"
    assert runtime_dir(s, {"RUNTIME_DIRECTORY": "/run/doctune:/run/other"}) == Path("/run/doctune")
    s2 = Settings(paths=PathsSettings(state_dir=tmp_path, runtime_dir=tmp_path / "rt"))
    assert runtime_dir(s2, {"RUNTIME_DIRECTORY": "/run/doctune"}) == tmp_path / "rt"


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "doctune.toml"
    port = free_port()  # nothing listens there: no status endpoint to ask
    cfg.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[daemon]\nstatus_listen = "127.0.0.1:{port}"\n'
    )
    return cfg


def test_retrain_without_daemon_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(_config(tmp_path)), "retrain"])
    assert result.exit_code == 1
    assert "no running doctune daemon" in result.output


def test_retrain_sends_sigusr1_to_the_pidfile_owner(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    marker = tmp_path / "got-usr1"
    pidfile = tmp_path / "state" / "doctune.pid"
    # A real process that holds the pidfile and records SIGUSR1.
    script = f"""
import signal, sys, time, pathlib
from daemon.pidfile import PidFile
got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
with PidFile(pathlib.Path({str(pidfile)!r})):
    print("ready", flush=True)
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
pathlib.Path({str(marker)!r}).write_text(str(len(got)))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(main, ["--config", str(cfg), "retrain"])
        assert result.exit_code == 0, result.output
        assert f"pid {proc.pid}" in result.output
        assert "status endpoint is unreachable" in result.output  # this stand-in serves none
        assert proc.wait(timeout=20) == 0
        assert marker.read_text() == "1"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_retrain_outside_the_unit_finds_a_daemon_in_runtime_directory(
    tmp_path: Path, ollama_fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon runs with systemd's $RUNTIME_DIRECTORY; `doctune retrain` from a shell
    (no such variable, no paths.runtime_dir) still reaches it."""
    port = free_port()
    (tmp_path / "sources").mkdir()
    config = daemon_config(tmp_path, ollama_fake.url, port)
    runtime = tmp_path / "run-doctune"
    runtime.mkdir()
    daemon = DaemonProcess(tmp_path, config, port, env={"RUNTIME_DIRECTORY": str(runtime)})
    try:
        daemon.wait_ready()
        assert (runtime / "doctune.pid").read_text().strip() == str(daemon.proc.pid)
        assert not (tmp_path / "state" / "doctune.pid").exists()
        monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
        result = CliRunner().invoke(main, ["--config", str(config), "retrain"])
        assert result.exit_code == 0, result.output
        assert f"pid {daemon.proc.pid}" in result.output
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert not (tmp_path / "state" / POINTER_NAME).exists()  # removed with the pidfile
    result = CliRunner().invoke(main, ["--config", str(config), "retrain"])
    assert result.exit_code == 1
    assert "no running doctune daemon" in result.output
