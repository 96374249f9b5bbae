"""Where registered versions live: one small protocol, two backends (Ollama, embedded llama.cpp).

`register_run`/`rollback` speak only `RegistryBackend`: create a version, smoke-test it, point
the alias at it, delete it. `OllamaBackend` does that with Ollama's model API;
`pipeline.ship.embedded.EmbeddedRegistry` with GGUF files under `models_dir` and an atomically
replaced pointer file; `pipeline.ship.choose_backend` picks one for a registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import structlog

from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.registry import OllamaRegistry

__all__ = [
    "BackendName",
    "OllamaBackend",
    "RegistrationError",
    "RegistryBackend",
    "StagedVersion",
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
