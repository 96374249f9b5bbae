"""The torch child process (training recipe, evaluation): its protocol, both sides.

The parent starts `python -m <module> <file>` in its own process group; the child writes one
JSON object per stdout line — progress events `{"event": ...}`, its answer as
`{"event": "result", "result": {...}}` — and logs to stderr, whose last lines the parent keeps
for the failure message. Cancelling the parent, or a timeout, kills the child's whole group
(SIGTERM, then SIGKILL), so no worker is left behind. The parent side never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process

__all__ = [
    "ChildExit",
    "ChildProcess",
    "EventFn",
    "child_env",
    "emit",
    "emit_result",
    "log_to_stderr",
]

EventFn = Callable[[dict[str, Any]], None]
STDERR_TAIL_LINES = 40
TERM_GRACE_S = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- child side -------------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout for the parent."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def emit_result(result: dict[str, Any]) -> None:
    """The child's answer: the last line the parent reads."""
    emit("result", result=result)


def log_to_stderr() -> None:
    """stdout carries the protocol only: every structlog line goes to stderr."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- parent side ------------------------------------------------------------------------


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the project importable, offline hub, unbuffered output."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("HF_HUB_OFFLINE", "1")  # a base model must already be local; never download
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@dataclass(frozen=True)
class ChildExit:
    """How a child ended: exit status (negative: killed by that signal), timeout, its result."""

    name: str
    returncode: int | None
    timed_out: bool
    timeout_s: float
    result: dict[str, Any] | None
    tail: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> str | None:
        """None when it exited 0; else what went wrong, with the stderr tail."""
        if self.timed_out:
            return f"timed out after {self.timeout_s:.0f} s" + format_tail(self.tail)
        if self.returncode == 0:
            return None
        return describe_exit(self.name, self.returncode) + format_tail(self.tail)


@dataclass
class ChildProcess:
    """One run of a child: `run()` starts it, pumps its lines, waits, and kills its group
    on cancellation or timeout. `tail` holds the last stderr lines meanwhile."""

    cmd: list[str]
    name: str = "the child"
    on_event: EventFn | None = None
    env: dict[str, str] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    result: dict[str, Any] | None = None

    async def run(
        self,
        *,
        timeout_s: float = 0.0,
        on_start: Callable[[int], Awaitable[None]] | None = None,
    ) -> ChildExit:
        """To the end (0 = no timeout); `on_start(pid)` runs once the child is started."""
        process = await anyio.open_process(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches every worker
            env=child_env(self.env),
        )
        try:
            if on_start is not None:
                await on_start(process.pid)
            with anyio.move_on_after(timeout_s if timeout_s > 0 else None) as scope:
                async with anyio.create_task_group() as tg:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    tg.start_soon(self._pump_events, process.stdout)
                    tg.start_soon(self._pump_tail, process.stderr)
                    await process.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await kill_group(process)
            raise
        if scope.cancelled_caught:
            await kill_group(process)
        return ChildExit(
            self.name,
            process.returncode,
            scope.cancelled_caught,
            timeout_s,
            self.result,
            tuple(self.tail),
        )

    def formatted_tail(self) -> str:
        return format_tail(self.tail)

    async def _pump_events(self, stream: ByteReceiveStream) -> None:
        async for line in _lines(stream):
            event = _event(line)
            if event is None:
                continue
            if event.get("event") == "result" and isinstance(event.get("result"), dict):
                self.result = dict(event["result"])
            elif self.on_event is not None:
                self.on_event(event)

    async def _pump_tail(self, stream: ByteReceiveStream) -> None:
        async for line in _lines(stream):
            # tqdm redraws with \r; keep only the last state of such a line.
            line = line.rsplit("\r", 1)[-1].rstrip()
            if line:
                self.tail.append(line[:1000])


def describe_exit(name: str, code: int | None) -> str:
    """`<name> exited with status N` / `was killed by SIGX` (with the OOM hint for SIGKILL)."""
    if code is None:
        return f"{name} did not report an exit status"
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == 9 else ""
        return f"{name} was killed by {sig}{hint}"
    return f"{name} exited with status {code}"


def format_tail(tail: deque[str] | tuple[str, ...]) -> str:
    return ("\n--- stderr tail ---\n" + "\n".join(tail)) if tail else ""


async def kill_group(process: Process) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, reap the child."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with anyio.move_on_after(grace):
            await process.wait()
            if sig == signal.SIGTERM:
                # The leader is gone; SIGKILL any worker that ignored SIGTERM.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            return


def _event(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _lines(stream: ByteReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            yield raw.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")
