"""Which registry a registration goes to: `registry.backend`, with "auto" decided by asking
Ollama (`GET /api/version`); opened as a `RegistryBackend` for the duration of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from pipeline.clients.ollama import OllamaModels, ollama_answers
from pipeline.settings import Settings
from pipeline.ship.backends import BackendName, RegistryBackend
from pipeline.ship.embedded_registry import EmbeddedRegistry
from pipeline.ship.ollama_registry import OllamaRegistry

__all__ = ["open_backend", "resolve_backend"]

log = structlog.get_logger(__name__)


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
    async with OllamaModels(settings.registry.ollama_url) as api:
        yield OllamaRegistry(api, quantize=settings.registry.quantize)
