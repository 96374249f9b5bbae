"""The daemon process lifecycle with recording stand-ins: real signals, sockets and files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_proc import NotifyListener, free_port, http_get, read_jsonl, wait_until

HARNESS = Path(__file__).with_name("daemon_harness.py")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    notify: NotifyListener
    calls: Path
    config: Path
    url: str
    tmp: Path

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in read_jsonl(self.calls) if c["kind"] == kind]


def _write_config(path: Path, tmp: Path, port: int, model: str = "m1") -> None:
    path.write_text(
        f"""
[paths]
state_dir = "{tmp / "state"}"
models_dir = "{tmp / "models"}"
[sources]
dir = "{tmp / "sources"}"
[generator]
model = "{model}"
[watch]
debounce_ms = 50
[daemon]
status_listen = "127.0.0.1:{port}"
drain_timeout_s = 2.0
retrain_coalesce_s = 1.5
training_check_interval_s = 3600
status_interval_s = 0.5
"""
    )


def _start(tmp: Path, env: dict[str, str] | None = None) -> Running:
    (tmp / "sources" / "repo").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "doctune.toml"
    _write_config(config, tmp, port)
    notify = NotifyListener(tmp / "notify.sock")
    calls = tmp / "calls.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(HARNESS), str(config), str(calls)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path), **(env or {})},
        stderr=open(tmp / "daemon.log", "wb"),  # noqa: SIM115 - lives as long as the process
    )
    running = Running(proc, notify, calls, config, f"http://127.0.0.1:{port}", tmp)
    notify.wait_for("READY=1", proc=proc)
    return running


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Running]:
    running = _start(tmp_path)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()
    running.notify.close()


def test_ready_comes_after_the_startup_reconcile(daemon: Running) -> None:
    first = daemon.kinds("reconcile")[0]
    assert first["repos"] is None  # a full reconcile of every repo
    assert first["at"] <= time.time()
    assert "STATUS=running" in daemon.notify.messages[-1]
    assert (daemon.tmp / "state" / "doctune.pid").read_text().strip() == str(daemon.proc.pid)


def test_status_endpoint_serves_get_and_refuses_post_and_foreign_host(daemon: Running) -> None:
    async def check() -> None:
        status, body = await http_get(daemon.url + "/status")
        assert status == 200
        assert '"phase": "running"' in body
        assert (await http_get(daemon.url + "/status", headers={"Host": "evil.test"}))[0] == 403
        import aiohttp

        async with aiohttp.ClientSession() as http, http.post(daemon.url + "/status") as r:
            assert r.status == 405

    anyio.run(check)


def test_saved_file_is_reconciled_as_a_path_hint(daemon: Running) -> None:
    (daemon.tmp / "sources" / "repo" / "guide.md").write_text("# Guide\n")
    wait_until(
        lambda: any(c["paths"] == {"repo": ["guide.md"]} for c in daemon.kinds("reconcile")),
        what="a reconcile with the saved path",
    )


def test_sigusr1_storm_starts_one_retrain(daemon: Running) -> None:
    for _ in range(10):
        daemon.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
    wait_until(lambda: len(daemon.kinds("retrain")) == 1, what="one retrain")
    time.sleep(2.5)  # coalesce window + run time: still exactly one
    assert [c["trigger"] for c in daemon.kinds("retrain")] == ["signal"]
    assert daemon.proc.poll() is None


def test_sighup_with_broken_config_keeps_running_on_the_old_one(daemon: Running) -> None:
    daemon.config.write_text("[generator]\nconcurrency = 0\nbogus_key = 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    msg = daemon.notify.wait_for("READY=1")
    assert "reload failed" in msg
    assert any("RELOADING=1" in m for m in daemon.notify.messages)
    assert daemon.proc.poll() is None
    assert [c["model"] for c in daemon.kinds("gen_start")] == ["m1"]
    # A good config afterwards is applied: the generator restarts with the new model.
    port = int(daemon.url.rsplit(":", 1)[1])
    _write_config(daemon.config, daemon.tmp, port, model="m2")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: [c["model"] for c in daemon.kinds("gen_start")] == ["m1", "m2"])


def test_sigterm_drains_in_flight_work_and_exits_zero(tmp_path: Path) -> None:
    running = _start(tmp_path, env={"HARNESS_INFLIGHT_S": "0.5"})
    try:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=10) == 0
        assert running.kinds("gen_drained")  # in-flight work was allowed to finish
        assert any("STOPPING=1" in m for m in running.notify.drain())
        assert not (tmp_path / "state" / "doctune.pid").exists()
    finally:
        running.notify.close()


def test_sigterm_with_stuck_work_exits_after_the_drain_timeout(tmp_path: Path) -> None:
    running = _start(tmp_path, env={"HARNESS_INFLIGHT_S": "600"})
    try:
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 2.0 + 5.0  # drain_timeout_s + slack
        assert not running.kinds("gen_drained")  # cut off; its lease will expire
    finally:
        running.notify.close()


def test_second_daemon_on_the_same_state_dir_refuses_to_start(daemon: Running) -> None:
    calls = daemon.tmp / "calls2.jsonl"
    result = subprocess.run(
        [sys.executable, str(HARNESS), str(daemon.config), str(calls)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "daemon_already_running" in result.stderr


def test_watchdog_pings_come_from_the_event_loop_at_half_the_interval(tmp_path: Path) -> None:
    running = _start(tmp_path, env={"WATCHDOG_USEC": "400000"})  # 0.4 s ⇒ a ping every 0.2 s
    try:
        began = time.monotonic()
        for _ in range(3):
            running.notify.wait_for("WATCHDOG=1", timeout_s=2.0, proc=running.proc)
        assert time.monotonic() - began < 2.0
    finally:
        running.proc.kill()
        running.proc.wait()
        running.notify.close()


def test_a_new_repository_directory_is_reconciled_and_then_watched(daemon: Running) -> None:
    new_repo = daemon.tmp / "sources" / "second"
    new_repo.mkdir()
    wait_until(
        lambda: any(c["repos"] == ["second"] for c in daemon.kinds("reconcile")),
        what="a reconcile of the new repo",
    )
    time.sleep(0.5)  # the watcher restarts with the new repo in its filter
    (new_repo / "intro.md").write_text("# Intro\n")
    wait_until(
        lambda: any(c["paths"] == {"second": ["intro.md"]} for c in daemon.kinds("reconcile")),
        what="a path hint inside the new repo",
    )


def test_a_crashing_task_exits_1_with_the_reason_logged(tmp_path: Path) -> None:
    running = _start(tmp_path, env={"HARNESS_GEN_CRASH_S": "0.5"})
    try:
        assert running.proc.wait(timeout=30) == 1
        log = (tmp_path / "daemon.log").read_text()
        assert '"event": "daemon_crashed"' in log
        assert "generation blew up" in log
        assert any("STOPPING=1" in m for m in running.notify.drain())
    finally:
        running.notify.close()
