"""The stand-in server: `FakeOllama` owns the knobs, the state and the aiohttp app.

Routes live by API area (`native`, `openai_compat`, `models`, `control`) as functions of the
server; what every generation request goes through is in `traffic`, the reply text comes from
`pairs` (grounded pairs) and `faults` (what goes wrong on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ollama_fake import control, models, native, openai_compat
from ollama_fake.faults import bad_pair, break_reply
from ollama_fake.pairs import (
    ASKED_PATTERN,
    CHUNK_PATTERN,
    fill,
    fresh_first,
    grounded_pairs,
    sentences,
    source_text,
)
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
        self.host = host
        self.port = port
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
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._control_site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

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

    def add_model(self, name: str, **details: Any) -> None:
        """Serve `name` (``name`` without a tag means ``:latest``)."""
        full = full_name(name)
        self.models[full] = Model(name=full, digest=sha(full), modified_at=now_iso(), **details)

    async def astart(self, control_port: int | None = None) -> None:
        """Start listening inside the running event loop."""
        self._loop = asyncio.get_running_loop()
        self.slot_cond = asyncio.Condition()
        # handler_cancellation: a client that disconnects (or is SIGKILLed) frees its slot,
        # as Ollama cancels the request when the connection drops.
        self._runner = web.AppRunner(self._make_app(), handler_cancellation=True)
        await self._runner.setup()
        await self._listen()
        if control_port is not None:
            self._control_site = web.TCPSite(self._runner, self.host, control_port)
            await self._control_site.start()

    async def aclose(self) -> None:
        """Stop listening and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.astart())
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
        return self

    def stop(self) -> None:
        """Stop a server started with `start()`."""
        if self._thread is None or self._loop is None or self._stop_event is None:
            return
        self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(30)
        self._thread = None

    async def aset_outage(self, on: bool) -> None:
        """Outage on: stop listening and drop every connection. Off: listen again."""
        if on == self.outage:
            return
        self.outage = on
        assert self._runner is not None
        if on:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            server = self._runner.server
            if server is not None:
                for conn in server.connections:
                    main = conn.transport is not None and self._is_main_port(conn.transport)
                    if self._control_site is None or main:
                        conn.force_close()
        else:
            await self._listen()

    def set_outage(self, on: bool) -> None:
        """Thread-mode version of `aset_outage` (call from any thread but the server's)."""
        self._in_server_loop(self.aset_outage(on))

    def _in_server_loop(self, coro: Any) -> Any:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("set_outage() needs start(); in async mode await aset_outage()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _is_main_port(self, transport: asyncio.BaseTransport) -> bool:
        sock = transport.get_extra_info("sockname")
        return bool(sock) and sock[1] == self.port

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]

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

    # ------------------------------------------------------------------ reply content

    def content(
        self, prompt: str, fmt: Any, rng: random.Random, model: str
    ) -> tuple[str, str, str]:
        """(content, outcome, done_reason) for a prompt and an Ollama ``format``."""
        source = self.source_text(prompt)
        in_prompt = re.search(r"JSON schema:\n(\{.*\})\s*$", prompt, re.DOTALL)
        if fmt is None and in_prompt:  # no structured output, but the prompt spells it out
            fmt = json.loads(in_prompt.group(1))
        if fmt is None:
            if self.responder is not None:
                return self.responder(prompt, model), "ok", "stop"
            sentence = (sentences(source) or [source[:200]])[0]
            return f"Based on the provided text: {sentence}", "ok", "stop"
        # Asking again about the same text (a retry, a repair) gets other sentences.
        variant = self.seen_sources[sha(source)] - 1
        pairs = grounded_pairs(source, variant)
        if self.avoid_asked:
            pairs = fresh_first(self.asked_pattern, prompt, pairs)
        outcome = "ok"
        if rng.random() < self.rate_bad_content:
            pairs = [bad_pair(pair, rng) for pair in pairs]
            outcome = "bad_content"
        schema = (
            fmt
            if isinstance(fmt, dict)
            else {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
            }
        )
        text = json.dumps(fill(schema, "", 0, pairs), ensure_ascii=False)
        broken = break_reply(text, rng, self.rate_truncated, self.rate_malformed)
        return broken or (text, outcome, "stop")

    def source_text(self, prompt: str) -> str:
        """The text a prompt asks about (`chunk_pattern`)."""
        return source_text(self.chunk_pattern, prompt)
