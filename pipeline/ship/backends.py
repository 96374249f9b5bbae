"""Where registered versions live: one small protocol, two backends (Ollama, embedded llama.cpp).

`register_run`/`rollback` speak only `RegistryBackend`: create a version, smoke-test it, point
the alias at it, delete it. `OllamaBackend` does that with Ollama's model API;
`pipeline.ship.embedded.EmbeddedRegistry` with GGUF files under `models_dir` and an atomically
replaced pointer file. `registry.backend = "auto"` picks Ollama when it answers, else llamacpp.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
import structlog

from pipeline.settings import Settings
from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.registry import OllamaRegistry

__all__ = [
    "BackendName",
    "OllamaBackend",
    "RegistrationError",
    "RegistryBackend",
    "StagedVersion",
    "open_backend",
    "resolve_backend",
]

log = structlog.get_logger(__name__)

BackendName = Literal["ollama", "llamacpp"]
SMOKE_OPTIONS = {"temperature": 0, "seed": 0, "num_predict": 48}
SMOKE_MAX_TOKENS = 48


class RegistrationError(RuntimeError):
    """Registration failed; the alias still serves the previous version."""


@dataclass(frozen=True)
class StagedVersion:
    """A run's files ready to import, the prompt format, and the Modelfile written beside them."""

    files: dict[str, Path]  # name → local path ("model.gguf", or safetensors + tokenizer)
    prompt: VersionPrompt
    modelfile: Path


class RegistryBackend(Protocol):
    """What registration and rollback need from a model store."""

    name: BackendName

    async def has_version(self, tag: str) -> bool:
        """The version exists, complete (a rollback target or a resumable registration)."""
        ...

    async def create_version(
        self, tag: str, staged: StagedVersion, on_status: Callable[[str], None] | None
    ) -> None:
        """Import `staged` as `tag`; raises RegistrationError/OllamaError/OSError on failure."""
        ...

    async def smoke_test(self, tag: str, question: str) -> str:
        """Ask `tag` one question through its template; the reply, or raise."""
        ...

    async def point_alias(self, tag: str, alias: str) -> None:
        """The one step that changes what users get."""
        ...

    async def delete_version(self, tag: str) -> bool:
        """Remove `tag`; False when it was already gone."""
        ...


class OllamaBackend:
    """Versions as Ollama models: blobs + /api/create, /api/chat smoke test, /api/copy alias."""

    name: BackendName = "ollama"

    def __init__(self, api: OllamaRegistry, *, quantize: str = "") -> None:
        self.api = api
        self.quantize = quantize

    async def has_version(self, tag: str) -> bool:
        return await self.api.show(tag) is not None

    async def create_version(
        self, tag: str, staged: StagedVersion, on_status: Callable[[str], None] | None
    ) -> None:
        server = await self.api.require_create_api()
        digests = {}
        for name, path in staged.files.items():
            digests[name], uploaded = await self.api.ensure_blob(path)
            log.info("register.blob", file=name, digest=digests[name], uploaded=uploaded)
        body = create_body(tag, digests, staged.prompt, self.quantize)
        statuses = await self.api.create(body, on_status=on_status)
        log.info("register.created", tag=tag, server=server, statuses=len(statuses))

    async def smoke_test(self, tag: str, question: str) -> str:
        reply = await self.api.chat(
            tag, [{"role": "user", "content": question}], options=SMOKE_OPTIONS
        )
        content = str(reply.get("message", {}).get("content", ""))
        if not reply.get("done") or not content.strip():
            raise RegistrationError(
                f"smoke test of {tag}: empty or unfinished reply {reply!r:.300}"
            )
        return content

    async def point_alias(self, tag: str, alias: str) -> None:
        await self.api.copy(tag, alias)

    async def delete_version(self, tag: str) -> bool:
        return await self.api.delete(tag)


def create_body(
    tag: str, digests: dict[str, str], prompt: VersionPrompt, quantize: str
) -> dict[str, object]:
    """The /api/create request: files by digest, the template and stops (as in the Modelfile)."""
    body: dict[str, object] = {
        "model": tag,
        "files": digests,
        "template": prompt.template,
        "parameters": {"stop": prompt.stop},
    }
    if quantize:
        body["quantize"] = quantize
    return body


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
        from pipeline.ship.embedded import EmbeddedRegistry

        yield EmbeddedRegistry.for_settings(settings)
        return
    async with OllamaRegistry(settings.registry.ollama_url) as api:
        yield OllamaBackend(api, quantize=settings.registry.quantize)
