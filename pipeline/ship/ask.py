"""Put questions to a model doctune made (or its base): `doctune ask`, the quickstart's compare.

`open_answerer(db, settings, "base" | "current" | RUN)` picks where the model lives:
- a version in Ollama: Ollama's `/api/chat` (its template and stops came from registration);
- a version in the embedded registry: the running `doctune serve` when it serves that version,
  else a llama.cpp child of the version's GGUF, prompted through its Modelfile template;
- the base: a llama.cpp child of the base GGUF, prompted like the current version (same
  tokenizer, same training template) when one is registered, else with the GGUF's own template.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from pipeline.clients import ollama
from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import LlamaServerError, LlamaServerSpec, default_gguf_path
from pipeline.clients.openai_compat import EngineError
from pipeline.settings import Settings
from pipeline.ship.embedded_registry import EmbeddedRegistry, RegistryPointerError
from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.prompted import stream_chat
from pipeline.ship.serve import NOTHING_REGISTERED
from state import registrations as store
from state.db import Database

__all__ = ["Answerer", "AskError", "NothingRegistered", "base_gguf", "open_answerer"]

ANSWER_MAX_TOKENS = 256


class AskError(RuntimeError):
    """The model could not be reached or started: one clear message."""


class NothingRegistered(AskError):
    """No tuned version exists yet."""

    def __init__(self) -> None:
        super().__init__(NOTHING_REGISTERED)


def base_gguf(settings: Settings) -> Path:
    """The base model as a GGUF: `training.base_model` when it is one, else bundled SmolLM2."""
    configured = settings.training.base_model
    if configured.endswith(".gguf"):
        return Path(configured)
    return default_gguf_path()


@dataclass
class Answerer:
    """One model, opened once, asked many questions; use as an async context manager."""

    label: str  # "base", or the version's tag
    where: str  # human-readable: Ollama URL, serve URL, or the GGUF path
    _stack: AsyncExitStack
    _session: aiohttp.ClientSession
    _url: str
    _kind: str  # "ollama" | "llamacpp"
    _prompt: VersionPrompt | None = None
    _model: str | None = None
    max_tokens: int = ANSWER_MAX_TOKENS

    async def __aenter__(self) -> Answerer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def stream(self, question: str) -> AsyncIterator[str]:
        """The answer, piece by piece."""
        messages = [{"role": "user", "content": question}]
        try:
            if self._kind == "ollama":
                async for text in self._ollama(messages):
                    yield text
                return
            async for delta in stream_chat(
                self._session,
                self._url,
                messages,
                prompt=self._prompt,
                max_tokens=self.max_tokens,
                model=self._model,
            ):
                if delta.text:
                    yield delta.text
        except (aiohttp.ClientError, TimeoutError, EngineError, ollama.OllamaError) as exc:
            raise AskError(f"{self.label} at {self.where}: {exc}") from exc

    async def answer(self, question: str) -> str:
        return "".join([piece async for piece in self.stream(question)])

    async def _ollama(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        options = {"temperature": 0, "seed": 0, "num_predict": self.max_tokens}
        assert self._model is not None
        async for text in ollama.stream_chat(
            self._session, self._url, self._model, messages, options=options
        ):
            yield text


async def open_answerer(db: Database, settings: Settings, which: str) -> Answerer:
    """An `Answerer` for "base", "current" or a run id (see the module docstring)."""
    stack = AsyncExitStack()
    session = await stack.enter_async_context(
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
    )
    try:
        return await _open(db, settings, which, stack, session)
    except BaseException:
        await stack.aclose()
        raise


async def _open(
    db: Database,
    settings: Settings,
    which: str,
    stack: AsyncExitStack,
    session: aiohttp.ClientSession,
) -> Answerer:
    registry = EmbeddedRegistry.for_settings(settings)
    alias = f"{settings.registry.model_name}:latest"
    if which == "base":
        prompt = _current_prompt(registry)
        url = await _child(stack, settings, base_gguf(settings), "base", registry)
        return Answerer("base", str(base_gguf(settings)), stack, session, url, "llamacpp", prompt)
    if which == "current":
        reg = await store.active_registration(db, alias)
        if reg is None:
            raise NothingRegistered()
    else:
        reg = await store.registration_for_run(db, which, f"{settings.registry.model_name}:{which}")
        if reg is None or reg.state not in ("active", "superseded"):
            raise AskError(f"run {which} has no registered version (see `doctune registrations`)")
    tag = alias if (which == "current" and reg.backend == "ollama") else reg.model_tag
    if reg.backend == "ollama":
        url = settings.registry.ollama_url.rstrip("/")
        return Answerer(tag, url, stack, session, url, "ollama", None, tag)
    try:
        gguf, prompt = registry.read_version(reg.model_tag)
    except RegistryPointerError as exc:
        raise AskError(str(exc)) from exc
    served = await _serve_url_for(session, settings, reg.model_tag)
    if served is not None:  # the endpoint applies the version's template itself
        return Answerer(reg.model_tag, served, stack, session, served, "llamacpp", None)
    url = await _child(stack, settings, gguf, run_label(reg.model_tag), registry)
    return Answerer(reg.model_tag, str(gguf), stack, session, url, "llamacpp", prompt)


def run_label(tag: str) -> str:
    return tag.split(":", 1)[-1]


def _current_prompt(registry: EmbeddedRegistry) -> VersionPrompt | None:
    with contextlib.suppress(RegistryPointerError):
        current = registry.current()
        if current is not None:
            return current.prompt
    return None


async def _serve_url_for(
    session: aiohttp.ClientSession, settings: Settings, tag: str
) -> str | None:
    """The running `doctune serve` base URL when it serves `tag` right now."""
    base = f"http://{settings.serve.host}:{settings.serve.port}"
    try:
        async with session.get(base + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
            info = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return base if info.get("model") == tag else None


async def _child(
    stack: AsyncExitStack, settings: Settings, gguf: Path, label: str, registry: EmbeddedRegistry
) -> str:
    spec = LlamaServerSpec(
        model_path=gguf,
        n_ctx=settings.serve.n_ctx,
        log_path=registry.root / "logs" / f"ask-{label}.log",
    )
    if settings.serve.n_threads > 0:
        spec = dataclasses.replace(spec, n_threads=settings.serve.n_threads)
    try:
        server = await stack.enter_async_context(LlamaServer(spec))
    except LlamaServerError as exc:
        raise AskError(str(exc)) from exc
    return server.base_url
