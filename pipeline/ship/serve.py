"""`doctune serve`: an OpenAI-compatible endpoint on loopback for the embedded registry's version.

Inference stays in llama-cpp-python: each version runs in its own `LlamaServer` child; this
module is a thin aiohttp layer in front of it that renders chat messages with the version's
Modelfile template (the training template) and forwards them to the child's completions
endpoint with the version's stops. It polls the registry's `current.json`; on a new version it
starts a second child, waits until it answers, switches new requests to it, lets requests in
flight on the old one finish (up to `drain_timeout_s`), then stops the old child. A version that
fails to start leaves the previous one serving; the reason is kept for `status`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import structlog
from aiohttp import web

from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import LlamaServerError, LlamaServerSpec, port_in_use
from pipeline.clients.openai_compat import EngineError
from pipeline.settings import Settings
from pipeline.ship.embedded_registry import CurrentVersion, EmbeddedRegistry, RegistryPointerError
from pipeline.ship.prompted import stream_chat
from state.db import Database
from state.meta import write_meta_json

__all__ = ["NOTHING_REGISTERED", "ModelServer", "ServeError", "publish_serve_state"]

log = structlog.get_logger(__name__)

NOTHING_REGISTERED = (
    "no tuned model is registered yet; train and register one with "
    "`uv run doctune quickstart` (or `doctune run --once`, `doctune train`, `doctune register RUN`)"
)


class ServeError(RuntimeError):
    """The endpoint cannot start (port taken, bad listen address): one clear message."""


@dataclass
class _Slot:
    """One running version: its child, its prompt format, and requests it is answering."""

    version: CurrentVersion
    server: LlamaServer
    in_flight: int = 0
    served: int = 0
    idle: anyio.Event = field(default_factory=anyio.Event)

    def enter(self) -> None:
        self.in_flight += 1
        self.served += 1
        self.idle = anyio.Event()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


class ModelServer:
    """The endpoint plus the version switcher; `serve()` runs both until cancelled."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._publish = publish  # e.g. into the `meta` table, for `doctune status`
        self.host = settings.serve.host
        self.port = port if port is not None else settings.serve.port
        self.registry = EmbeddedRegistry.for_settings(settings)
        self.active: _Slot | None = None
        self.switches = 0
        self.last_error: str | None = None
        self._failed_switch: tuple[str, float] | None = None  # (tag, switched_at) that failed
        self._session: aiohttp.ClientSession | None = None
        self._running = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def describe(self) -> dict[str, Any]:
        """What `status` shows: the URL, the version served, switches and the last error."""
        slot = self.active
        return {
            "url": self.url,
            "model": slot.version.tag if slot else None,
            "gguf": str(slot.version.gguf) if slot else None,
            "engine": slot.server.describe() if slot else None,
            "in_flight": slot.in_flight if slot else 0,
            "requests": slot.served if slot else 0,
            "switches": self.switches,
            "last_error": self.last_error,
            "running": self._running,
        }

    async def _published(self) -> None:
        if self._publish is not None:
            await self._publish(self.describe())

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, load the current version, follow the pointer; until cancelled."""
        if port_in_use(self.host, self.port):
            raise ServeError(
                f"port {self.host}:{self.port} is already in use (another `doctune serve`?); "
                f"choose another with --port or [serve] port"
            )
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as exc:
                raise ServeError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
            timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                self._session = session
                self._running = True
                await self._follow_once()
                await self._published()
                log.info("serve.listening", url=self.url, model=self.describe()["model"])
                task_status.started(self.url)
                while True:
                    await anyio.sleep(self.settings.serve.poll_s)
                    await self._follow_once()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                if self.active is not None:
                    await self.active.server.stop()
                await runner.cleanup()
                if self._session is not None:
                    await self._published()

    async def _follow_once(self) -> None:
        """Switch to the pointer's version if it changed (and did not already fail)."""
        try:
            current = self.registry.current()
        except RegistryPointerError as exc:
            if self.last_error != str(exc):
                log.error("serve.pointer_unusable", error=str(exc))
            self.last_error = str(exc)  # keep serving what is loaded
            await self._published()
            return
        if current is None or (self.active and self.active.version.tag == current.tag):
            return
        if self._failed_switch == (current.tag, current.switched_at):
            return
        await self._switch(current)

    async def _switch(self, version: CurrentVersion) -> None:
        serve = self.settings.serve
        spec = LlamaServerSpec(
            model_path=version.gguf,
            n_ctx=serve.n_ctx,
            model_alias=version.tag,
            log_path=self.registry.root / "logs" / f"serve-{version.run_id}.log",
        )
        if serve.n_threads > 0:
            import dataclasses

            spec = dataclasses.replace(spec, n_threads=serve.n_threads)
        server = LlamaServer(spec)
        try:
            await server.start()
        except LlamaServerError as exc:
            self._failed_switch = (version.tag, version.switched_at)
            self.last_error = f"{version.tag} did not start (still serving the previous): {exc}"
            log.error("serve.switch_failed", tag=version.tag, error=str(exc))
            await self._published()
            return
        old, self.active = self.active, _Slot(version, server)
        self.switches += 1
        self.last_error = None
        log.info("serve.switched", tag=version.tag, previous=old.version.tag if old else None)
        await self._published()
        if old is not None:
            await self._drain(old)

    async def _drain(self, old: _Slot) -> None:
        if old.in_flight:
            with anyio.move_on_after(self.settings.serve.drain_timeout_s):
                await old.idle.wait()
        await old.server.stop()
        log.info("serve.drained", tag=old.version.tag, unfinished=old.in_flight)

    # --- HTTP handlers ------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(self.describe(), status=200 if self.active else 503)

    async def _models(self, request: web.Request) -> web.Response:
        slot = self.active
        data = []
        if slot is not None:
            data.append(
                {
                    "id": slot.version.tag,
                    "object": "model",
                    "created": int(slot.version.switched_at),
                    "owned_by": "doctune",
                }
            )
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            messages = [
                {"role": str(m["role"]), "content": str(m["content"])} for m in body["messages"]
            ]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with messages: [{role, content}, ...]")
        slot = self.active
        if slot is None:
            return _error(503, self.last_error or NOTHING_REGISTERED)
        slot.enter()  # the request stays on this version even if a switch happens now
        try:
            return await self._answer(request, slot, body, messages)
        finally:
            slot.leave()

    async def _answer(
        self, request: web.Request, slot: _Slot, body: dict[str, Any], messages: list[Any]
    ) -> web.StreamResponse:
        assert self._session is not None
        chat_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        deltas = stream_chat(
            self._session,
            slot.server.base_url,
            messages,
            prompt=slot.version.prompt,
            max_tokens=int(body.get("max_tokens") or self.settings.serve.max_tokens),
            temperature=float(body.get("temperature", 0.0)),
            seed=int(body.get("seed", 0)),
        )
        head = {"id": chat_id, "created": created, "model": slot.version.tag}
        if not body.get("stream"):
            pieces, finish = [], None
            try:
                async for delta in deltas:
                    pieces.append(delta.text)
                    finish = delta.finish_reason or finish
            except (EngineError, aiohttp.ClientError) as exc:
                return _error(502, f"{slot.version.tag}: {exc}")
            message = {"role": "assistant", "content": "".join(pieces)}
            return web.json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None) -> None:
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""}, None)
        try:
            async for delta in deltas:
                await send({"content": delta.text} if delta.text else {}, delta.finish_reason)
        except (EngineError, aiohttp.ClientError) as exc:
            err = {"error": {"message": f"{slot.version.tag}: {exc}"}}
            await resp.write(f"data: {json.dumps(err)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


async def publish_serve_state(db: Database, info: dict[str, Any]) -> None:
    """A `ModelServer`'s `publish`: what it serves, into `meta`, where `doctune status` reads it."""
    await write_meta_json(db, "serve", info)
