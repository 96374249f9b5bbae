"""Helpers for tests that run a daemon as a real process: notify socket, free port, call logs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifyListener:
    """The systemd side of sd_notify: a datagram socket read continuously by a thread (so a
    full receive queue never makes the daemon drop a message, as systemd never would)."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._seen = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                msg = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()

    def wait_for(
        self, key: str, timeout_s: float = 60.0, proc: subprocess.Popen[Any] | None = None
    ) -> str:
        """Block until a not-yet-consumed message has line `key` (e.g. READY=1); return it."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                while self._seen < len(self.messages):
                    msg = self.messages[self._seen]
                    self._seen += 1
                    if key in msg.split("\n"):
                        return msg
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no {key} within {timeout_s}s; got {self.messages}")
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {proc.returncode} before {key}")
                self._cond.wait(0.2)

    def drain(self) -> list[str]:
        """Every message received so far."""
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        self.sock.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


async def http_get(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as resp:
        return resp.status, await resp.text()


RUN_CLI = "import sys; from daemon.cli import main; sys.exit(main())"


def daemon_config(tmp: Path, ollama_url: str, port: int, **sections: dict[str, Any]) -> Path:
    """A doctune.toml for a test daemon under `tmp` (sources in tmp/sources); `sections`
    override or add keys, e.g. watch={"mode": "commits"}."""
    base: dict[str, dict[str, Any]] = {
        "paths": {"state_dir": str(tmp / "state"), "models_dir": str(tmp / "models")},
        "sources": {"dir": str(tmp / "sources")},
        "generator": {
            "backend": "ollama",
            "mode": "qa",
            "url": ollama_url,
            "model": "llama3.2:3b",
            "concurrency": 2,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
        },
        "watch": {"debounce_ms": 100},
        "training": {"min_new_pairs": 1_000_000},  # tests trigger retrains explicitly
        "daemon": {
            "status_listen": f"127.0.0.1:{port}",
            "drain_timeout_s": 5.0,
            "status_interval_s": 0.5,
            "training_check_interval_s": 3600.0,
        },
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    path = tmp / "doctune.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """`doctune --config CFG run` as a child process with a notify socket to listen on."""

    def __init__(self, tmp: Path, config: Path, port: int, env: dict[str, str] | None = None):
        import os
        import sys

        self.tmp = tmp
        self.url = f"http://127.0.0.1:{port}"
        self.notify = NotifyListener(tmp / f"notify-{time.monotonic_ns()}.sock")
        self.log_path = tmp / "daemon.log"
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, "--config", str(config), "run"],
            env={**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})},
            stdout=self.log,
            stderr=self.log,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        return self.notify.wait_for("READY=1", timeout_s, proc=self.proc)

    def stop(self, timeout_s: float = 30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        self.log.close()

    def status(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/status", timeout=10) as resp:
            return json.loads(resp.read())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def sql(db_path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the daemon's database from the test (a separate reader; WAL makes that safe)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(query, params))
    finally:
        conn.close()
