"""The stand-in server: `FakeOllama` owns the knobs, the state and the aiohttp app.

Routes live by API area (`native`, `openai_compat`, `models`, `control`) as functions of the
server; what every generation request goes through is in `traffic`, the reply text comes from
`replies` (over `pairs` and `faults`); where and how it listens is its `listener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ollama_fake import control, models, native, openai_compat
from ollama_fake.listener import Listener
from ollama_fake.pairs import ASKED_PATTERN, CHUNK_PATTERN, source_text
from ollama_fake.wire import VERSION, Blob, Call, Model, full_name, now_iso, sha

__all__ = ["DEFAULT_MODELS", "FakeOllama"]


DEFAULT_MODELS = ("llama3.2:3b", "llama3.2:1b")


class FakeOllama:
    """The stand-in server; see the module docstring for endpoints and knobs."""

    def __init__(
        self,
        *,
        slots: int = 1,
        latency_s: float = 0.0,
        seed: int = 0,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
        call_log: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._listener = Listener(host, port)
        self.seed = seed
        self.slots = slots
        self.max_queue = 512
        self.latency_s = latency_s
        self.jitter_s = 0.0
        self.load_latency_s = 0.0
        self.rate_503 = 0.0
        self.rate_500 = 0.0
        self.rate_400 = 0.0
        self.rate_malformed = 0.0
        self.rate_truncated = 0.0
        self.rate_stream_error = 0.0
        self.rate_bad_content = 0.0
        self.chunk_pattern = CHUNK_PATTERN
        self.asked_pattern = ASKED_PATTERN
        self.avoid_asked = True
        self.responder: Callable[[str, str], str] | None = None
        # OpenAI-compatible servers differ in the response_format they take (faults.format_refusal)
        self.openai_flavor = "vllm"
        # recorded real exchanges {exchange_key: {"status", "response"}}; when set, the OpenAI
        # route answers only from it (an unrecorded request gets 500 "no recorded reply")
        self.transcript: dict[str, dict[str, Any]] | None = None
        self.version = VERSION  # what /api/version answers
        self.models: dict[str, Model] = {}
        for name in models:
            self.add_model(name)
        self.blobs: dict[str, Blob] = {}
        self.created: dict[str, dict[str, Any]] = {}
        self.create_error: tuple[int, str] | None = None
        self.delete_error: tuple[int, str] | None = None
        self.blob_uploads: Counter[str] = Counter()  # POST /api/blobs per digest
        self.loaded: dict[str, float] = {}
        self.calls: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.running = 0
        self.max_running = 0
        self.requests_by_path: Counter[str] = Counter()
        self.call_log = Path(call_log) if call_log else None
        self.outage = False
        self.seen_prompts: Counter[str] = Counter()
        self.seen_sources: Counter[str] = Counter()
        self.slot_cond: asyncio.Condition | None = None
        self.waiting = 0
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        """The main port (the one chosen, when constructed with 0, once listening)."""
        return self._listener.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return self._listener.url

    @property
    def control_url(self) -> str | None:
        """The control port's base URL (`astart(control_port=...)`), e.g. in a subprocess."""
        return self._listener.control_url

    def add_model(self, name: str, **details: Any) -> None:
        """Serve `name` (``name`` without a tag means ``:latest``)."""
        full = full_name(name)
        self.models[full] = Model(name=full, digest=sha(full), modified_at=now_iso(), **details)

    async def astart(self, control_port: int | None = None) -> None:
        """Start listening inside the running event loop."""
        self.slot_cond = asyncio.Condition()
        await self._listener.astart(self._make_app(), control_port)

    async def aclose(self) -> None:
        """Stop listening and close every connection."""
        await self._listener.aclose()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeOllama]:
        """``async with fake.serving():`` — run in the caller's loop."""
        await self.astart()
        try:
            yield self
        finally:
            await self.aclose()

    def start(self) -> FakeOllama:
        """Run the server on its own event loop in a daemon thread; returns when listening."""
        self._listener.start_thread(self.astart)
        return self

    def stop(self) -> None:
        """Stop a server started with `start()`."""
        self._listener.stop_thread()

    async def aset_outage(self, on: bool) -> None:
        """Outage on: stop listening and drop every connection. Off: listen again."""
        if on == self.outage:
            return
        self.outage = on
        if on:
            await self._listener.drop()
        else:
            await self._listener.listen()

    def set_outage(self, on: bool) -> None:
        """Thread-mode version of `aset_outage` (call from any thread but the server's)."""
        if not self._listener.in_thread:
            raise RuntimeError("set_outage() needs start(); in async mode await aset_outage()")
        self._listener.run_in_thread(self.aset_outage(on))

    # ------------------------------------------------------------------ statistics

    def calls_per_chunk(self) -> Counter[str]:
        """How many generation calls each chunk text (sha256) received."""
        with self.lock:
            return Counter(c.chunk_sha for c in self.calls if c.chunk_sha is not None)

    def generation_calls(self) -> list[Call]:
        """Calls that asked for content (warm-up loads excluded)."""
        with self.lock:
            return [c for c in self.calls if c.outcome != "load"]

    def reset_stats(self) -> None:
        """Forget the call log and maxima (knobs, models and blobs stay)."""
        with self.lock:
            self.calls.clear()
            self.max_in_flight = self.in_flight
            self.max_running = self.running
            self.requests_by_path.clear()

    def stats(self) -> dict[str, Any]:
        """JSON-able counters (also served at ``/_fake/stats``)."""
        with self.lock:
            outcomes = Counter(c.outcome for c in self.calls)
        return {
            "calls": len(self.calls),
            "outcomes": dict(outcomes),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "running": self.running,
            "max_running": self.max_running,
            "requests_by_path": dict(self.requests_by_path),
            "outage": self.outage,
        }

    # ------------------------------------------------------------------ app

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        routes: list[tuple[str, str, Any]] = [
            ("POST", "/api/chat", native.chat),
            ("POST", "/api/generate", native.generate),
            ("GET", "/api/version", models.version),
            ("GET", "/api/tags", models.tags),
            ("GET", "/api/ps", models.ps),
            ("POST", "/api/show", models.show),
            ("POST", "/api/copy", models.copy),
            ("DELETE", "/api/delete", models.delete),
            ("POST", "/api/pull", models.pull),
            ("HEAD", "/api/blobs/{digest}", models.blob_head),
            ("POST", "/api/blobs/{digest}", models.blob_post),
            ("POST", "/api/create", models.create),
            ("POST", "/v1/chat/completions", openai_compat.openai_chat),
            ("GET", "/v1/models", openai_compat.openai_models),
            ("GET", "/_fake/stats", control.ctl_stats),
            ("GET", "/_fake/calls", control.ctl_calls),
            ("GET", "/_fake/knobs", control.ctl_knobs),
            ("POST", "/_fake/knobs", control.ctl_knobs),
            ("POST", "/_fake/outage", control.ctl_outage),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, functools.partial(handler, self))
        return app

    # ------------------------------------------------------------------ reply text

    def source_text(self, prompt: str) -> str:
        """The text a prompt asks about (`chunk_pattern`)."""
        return source_text(self.chunk_pattern, prompt)
