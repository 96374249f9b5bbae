"""Where registered versions live: one small protocol, two backends (Ollama, embedded llama.cpp).

`register_run`/`rollback` speak only `RegistryBackend`: create a version, smoke-test it, point
the alias at it, delete it. `pipeline.ship.ollama_registry.OllamaRegistry` does that with
Ollama's model API; `pipeline.ship.embedded_registry.EmbeddedRegistry` with GGUF files under
`models_dir` and an atomically replaced pointer file; `pipeline.ship.choose_backend` picks one
for a registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pipeline.ship.modelfile import VersionPrompt

__all__ = [
    "SMOKE_MAX_TOKENS",
    "SMOKE_OPTIONS",
    "BackendName",
    "RegistrationError",
    "RegistryBackend",
    "StagedVersion",
]

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
