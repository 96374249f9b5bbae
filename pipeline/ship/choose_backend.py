"""Which registry a registration goes to: `registry.backend`, with "auto" decided by asking
Ollama (`GET /api/version`); opened as a `RegistryBackend` for the duration of a block."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import structlog

from pipeline.settings import Settings
from pipeline.ship.backends import BackendName, OllamaBackend, RegistryBackend
from pipeline.ship.embedded import EmbeddedRegistry
from pipeline.ship.registry import OllamaRegistry

__all__ = ["ollama_answers", "open_backend", "resolve_backend"]

log = structlog.get_logger(__name__)


async def ollama_answers(url: str, *, timeout_s: float = 2.0) -> bool:
    """True when an Ollama server answers `GET /api/version` at `url`."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url.rstrip("/") + "/api/version") as resp,
        ):
            if resp.status != 200:
                return False
            return "version" in json.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return False


async def resolve_backend(settings: Settings) -> BackendName:
    """`registry.backend`, with "auto" decided now: Ollama when it answers, else llamacpp."""
    choice = settings.registry.backend
    if choice != "auto":
        return choice
    if await ollama_answers(settings.registry.ollama_url):
        return "ollama"
    log.info("registry.auto_embedded", ollama_url=settings.registry.ollama_url)
    return "llamacpp"


@asynccontextmanager
async def open_backend(
    settings: Settings, name: BackendName | None = None
) -> AsyncIterator[RegistryBackend]:
    """The backend `name` (default: `resolve_backend`), open for the duration of the block."""
    chosen = name or await resolve_backend(settings)
    if chosen == "llamacpp":
        yield EmbeddedRegistry.for_settings(settings)
        return
    async with OllamaRegistry(settings.registry.ollama_url) as api:
        yield OllamaBackend(api, quantize=settings.registry.quantize)
