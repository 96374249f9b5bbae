"""The llama.cpp engine: llama-cpp-python's OpenAI-compatible server, run as a child process.

doctune never loads llama.cpp into its own process: a crash there (or a GGUF that makes it
abort) must become an outage of one endpoint, not the end of the daemon. `LlamaServer` starts
`python -m llama_cpp.server` on a loopback port in its own process group, waits until
`GET /v1/models` answers, restarts it when it dies (`supervise`), and stops it on drain.
Both the embedded generator and `doctune serve` use it; callers talk to it with the ordinary
OpenAI-compatible client (`pipeline.clients.openai_compat`). What it runs, and the checks
before a start, are `pipeline.clients.llamacpp_spec`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import aiohttp
import anyio
import structlog

from pipeline.clients.llamacpp_spec import (
    LlamaServerError,
    LlamaServerSpec,
    check_gguf,
    free_port,
    port_in_use,
)

__all__ = ["LlamaServer"]

log = structlog.get_logger(__name__)

_LOG_TAIL_BYTES = 4000


class LlamaServer:
    """One llama.cpp server child: `start`, `supervise` (restart on crash), `stop`.

    `base_url` is valid after `start`. `restarts`, `last_error` and `describe()` feed status.
    """

    def __init__(self, spec: LlamaServerSpec) -> None:
        self.spec = spec
        self.port = 0
        self.restarts = 0
        self.last_error = ""
        self.started_at: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"LlamaServer({str(self.spec.model_path)!r}, port={self.port})"

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "llama.cpp",
            "model_path": str(self.spec.model_path),
            "url": self.base_url if self.port else None,
            "pid": self.pid if self.running else None,
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error or None,
        }

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop()

    async def start(self) -> None:
        """Spawn the child and wait until it answers; LlamaServerError (naming the file) if not."""
        check_gguf(self.spec.model_path)
        self._stopping = False
        port = self.spec.port or free_port(self.spec.host)
        if self.spec.port and port_in_use(self.spec.host, port):
            raise LlamaServerError(
                f"port {self.spec.host}:{port} is already in use; choose another port"
            )
        self.port = port
        self._open_log()
        self._process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; never waits
            self.spec.argv(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file or subprocess.DEVNULL,
            stderr=self._log_file or subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a terminal's Ctrl-C is ours to pass
            preexec_fn=_die_with_parent,
        )
        log.info("llamacpp.starting", model=str(self.spec.model_path), port=port, pid=self.pid)
        try:
            await self._wait_ready()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._terminate()
            raise
        self.started_at = time.monotonic()
        self.last_error = ""
        log.info("llamacpp.ready", url=self.base_url, pid=self.pid)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.start_timeout_s
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    code = self._process.returncode
                    raise LlamaServerError(
                        f"llama.cpp server for {self.spec.model_path} exited with code {code} "
                        f"while starting{self._log_tail_suffix()}"
                    )
                if await self._answers(session):
                    return
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama.cpp server for {self.spec.model_path} did not answer within "
                        f"{self.spec.start_timeout_s:g} s{self._log_tail_suffix()}"
                    )
                await anyio.sleep(0.2)

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.base_url}/v1/models") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def healthy(self) -> bool:
        """The child is alive and answers `GET /v1/models`."""
        if not self.running:
            return False
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            return await self._answers(session)

    async def supervise(
        self,
        *,
        on_change: Callable[[LlamaServer], None] | None = None,
        poll_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        """Run until cancelled: restart the child whenever it dies, backing off on failures.

        Never raises for an engine failure (a crash, a GGUF that fails to load): it records
        `last_error` and tries again, so the caller sees an endpoint outage, not an exception.
        """
        backoff_s = 1.0
        while True:
            if self.running or self._stopping:
                await anyio.sleep(poll_s)
                continue
            if self._process is not None:
                code = self._process.returncode
                self.last_error = (
                    f"llama.cpp server exited with code {code}{self._log_tail_suffix()}"
                )
                log.warning("llamacpp.exited", code=code, model=str(self.spec.model_path))
                self._process = None
                if on_change:
                    on_change(self)
            try:
                await self.start()
            except LlamaServerError as exc:
                self.last_error = str(exc)
                log.error("llamacpp.restart_failed", error=str(exc), retry_in_s=backoff_s)
                await anyio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, backoff_max_s)
                continue
            self.restarts += 1
            backoff_s = 1.0
            if on_change:
                on_change(self)

    async def stop(self) -> None:
        """SIGTERM the child's process group, SIGKILL it after `stop_timeout_s`."""
        self._stopping = True
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self._process
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.spec.stop_timeout_s
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
                await anyio.to_thread.run_sync(proc.wait)
            log.info("llamacpp.stopped", pid=proc.pid, code=proc.returncode)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _open_log(self) -> None:
        if self.spec.log_path is None or self._log_file is not None:
            return
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.spec.log_path.open("ab")

    def _log_tail_suffix(self) -> str:
        path = self.spec.log_path
        if path is None or not path.exists():
            return ""
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - _LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace").strip().splitlines()
        lines = [line for line in tail if line.strip()][-3:]
        return (": " + " | ".join(lines)) if lines else f" (see {path})"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the doctune process dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), so no engine outlives the process that supervised it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
