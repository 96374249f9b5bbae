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
    """The systemd side of sd_notify: a datagram socket collecting messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(
        self, key: str, timeout_s: float = 60.0, proc: subprocess.Popen[Any] | None = None
    ) -> str:
        """Block until a message containing line `key` (e.g. READY=1) arrives; return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                msg = self.sock.recv(65536).decode()
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(
                        f"daemon exited with {proc.returncode} before {key}"
                    ) from None
                continue
            self.messages.append(msg)
            if key in msg.split("\n"):
                return msg
        raise AssertionError(f"no {key} within {timeout_s}s; got {self.messages}")

    def drain(self) -> list[str]:
        """Messages received so far without waiting."""
        self.sock.settimeout(0)
        try:
            while True:
                self.messages.append(self.sock.recv(65536).decode())
        except (BlockingIOError, TimeoutError):
            pass
        return self.messages

    def close(self) -> None:
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
