"""The embedded engine of a generation run: doctune's own llama.cpp server, supervised.

It is started before the first job (a GGUF that cannot start is a ConfigurationError),
restarted when it crashes (a crash is an outage of its endpoint meanwhile; the restarted child
listens on a new port) and stopped when the run ends.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from pipeline.clients.errors import ConfigurationError
from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import LlamaServerError, LlamaServerSpec

__all__ = ["EmbeddedEngine"]


class EmbeddedEngine:
    """One `LlamaServer` child for the run; `start_s` is how long it took to answer."""

    def __init__(self, spec: LlamaServerSpec) -> None:
        self.server = LlamaServer(spec)
        self.start_s = 0.0

    @property
    def url(self) -> str:
        return self.server.base_url

    def describe(self) -> dict[str, Any]:
        return self.server.describe()

    async def start(self) -> None:
        """Spawn the child and wait until it answers; ConfigurationError when it cannot."""
        started = time.monotonic()
        try:
            await self.server.start()
        except LlamaServerError as exc:
            raise ConfigurationError(str(exc), reason="engine_start") from None
        self.start_s = time.monotonic() - started

    @asynccontextmanager
    async def supervised(self, on_move: Callable[[str], None]) -> AsyncIterator[None]:
        """Restart the child whenever it dies (`on_move(new_url)`); stop it when the block ends."""

        def moved(server: LlamaServer) -> None:
            on_move(server.base_url)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(self.server.supervise, on_change=moved))
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.server.stop()

    def pid_now(self) -> int | None:
        """The pid of the running child (None while it is down)."""
        return self.server.pid if self.server.running else None

    async def died(self, pid: int | None) -> bool:
        """The child that was running as `pid` when a call started has exited since."""
        if pid is None:
            return False
        server = self.server
        with anyio.move_on_after(1.0):
            while server.running and server.pid == pid:  # noqa: ASYNC110
                await anyio.sleep(0.05)  # a child process's exit is not an event we get
        return not (server.running and server.pid == pid)
