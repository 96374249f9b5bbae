"""Where the stand-in listens: one aiohttp runner, its main and control ports, and outages.

`Listener` runs an app in the caller's event loop (`astart`) or on a loop of its own in a
daemon thread (`start_thread`). An outage closes the main port and drops its connections
(`drop`) while the control port keeps answering; `listen` opens the main port again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

__all__ = ["Listener"]


class Listener:
    """One app's runner and sites; `port` is the main port's (known once listening)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._control_site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str | None:
        """The control port's base URL (`astart(control_port=...)`), e.g. in a subprocess."""
        if self._control_site is None:
            return None
        server = self._control_site._server
        assert isinstance(server, asyncio.base_events.Server)
        return f"http://{self.host}:{server.sockets[0].getsockname()[1]}"

    @property
    def in_thread(self) -> bool:
        """Running on its own loop in a thread (`start_thread`), not in the caller's loop."""
        return self._loop is not None and self._thread is not None

    async def astart(self, app: web.Application, control_port: int | None = None) -> None:
        """Start listening inside the running event loop."""
        self._loop = asyncio.get_running_loop()
        # handler_cancellation: a client that disconnects (or is SIGKILLed) frees its slot,
        # as Ollama cancels the request when the connection drops.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await self.listen()
        if control_port is not None:
            self._control_site = web.TCPSite(self._runner, self.host, control_port)
            await self._control_site.start()

    async def aclose(self) -> None:
        """Stop listening and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_thread(self, astart: Callable[[], Awaitable[None]]) -> None:
        """Run `astart` (which calls `self.astart`) on an event loop of its own in a daemon
        thread; returns when listening, or raises what `astart` raised."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(astart())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self._stop_event = asyncio.Event()
            ready.set()
            loop.run_until_complete(self._stop_event.wait())
            loop.run_until_complete(self.aclose())
            loop.close()

        self._thread = threading.Thread(target=run, name="ollama-fake", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]

    def stop_thread(self) -> None:
        """Stop what `start_thread` started."""
        if self._thread is None or self._loop is None or self._stop_event is None:
            return
        self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(30)
        self._thread = None

    def run_in_thread(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the thread's loop from any other thread; its result (30 s at most)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def drop(self) -> None:
        """Stop listening on the main port and force-close its connections (all of them when
        there is no control port)."""
        assert self._runner is not None
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server
        if server is not None:
            for conn in server.connections:
                main = conn.transport is not None and self._is_main_port(conn.transport)
                if self._control_site is None or main:
                    conn.force_close()

    async def listen(self) -> None:
        """Listen on the main port (on the same port again after `drop`)."""
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]

    def _is_main_port(self, transport: asyncio.BaseTransport) -> bool:
        sock = transport.get_extra_info("sockname")
        return bool(sock) and sock[1] == self.port
