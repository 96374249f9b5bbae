"""Which generator backend runs: `auto` resolved, the embedded engine named by its GGUF.

`backend = "auto"` (the default) asks `url` once per process whether Ollama answers
(`GET /api/version`); if it does, Ollama generates, else doctune's embedded llama.cpp engine
(pipeline.clients.llamacpp) does, on `model_path` (default: the bundled SmolLM2-135M-Instruct GGUF).
The embedded engine's model name — part of every job key — is the file's stem plus a short
content hash, so a different file makes new jobs and the same file never does.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from pipeline.clients.errors import ConfigurationError
from pipeline.clients.llamacpp_spec import (
    LlamaServerError,
    LlamaServerSpec,
    check_gguf,
    default_gguf_path,
    default_threads,
)
from pipeline.clients.ollama import ollama_answers
from pipeline.settings import GeneratorSettings

__all__ = [
    "EMBEDDED_CONCURRENCY",
    "ResolvedBackend",
    "embedded_model_name",
    "embedded_spec",
    "forget_resolutions",
    "resolve_backend",
]

log = structlog.get_logger(__name__)

# llama-cpp-python's server answers one chat completion at a time; more would only queue there.
EMBEDDED_CONCURRENCY = 1
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class ResolvedBackend:
    """The settings generation runs with (`backend` concrete, `model` the job-key name)."""

    gen: GeneratorSettings
    configured: str  # what the config said: auto | ollama | openai | llamacpp
    why: str  # one line for logs and `status`

    @property
    def embedded(self) -> bool:
        return self.gen.backend == "llamacpp"

    def describe(self) -> dict[str, str]:
        return {"backend": self.gen.backend, "configured": self.configured, "why": self.why}


# What was decided per (backend, url, model, model_path, engine_threads): the backend and the
# model name only — every other setting comes from the settings being resolved, so a reload
# that changes, say, concurrency is never answered with stale settings.
_cache: dict[tuple[object, ...], tuple[str, str, Path | None, str]] = {}
_hashes: dict[tuple[str, int, int], str] = {}


def forget_resolutions() -> None:
    """Drop what this process decided (tests; a reload keys on the new settings anyway)."""
    _cache.clear()


def _key(gen: GeneratorSettings) -> tuple[object, ...]:
    return (gen.backend, gen.url, gen.model, gen.model_path, gen.engine_threads)


async def resolve_backend(gen: GeneratorSettings) -> ResolvedBackend:
    """Decide the backend once per process and settings; ConfigurationError for a bad GGUF."""
    key = _key(gen)
    if key in _cache:
        backend, model, model_path, why = _cache[key]
        resolved_gen = dataclasses.replace(
            gen,
            backend=backend,  # type: ignore[arg-type]
            model=model,
            model_path=model_path,
        )
        return ResolvedBackend(resolved_gen, _configured(gen, why), why)
    if gen.backend == "auto":
        if await ollama_answers(gen.url, timeout_s=gen.connect_timeout_s + 2.0):
            resolved = ResolvedBackend(
                dataclasses.replace(gen, backend="ollama"),
                "auto",
                f"auto: Ollama answers at {gen.url}",
            )
        else:
            resolved = await _embedded(gen, "auto", f"auto: no Ollama at {gen.url}, embedded")
    elif gen.backend == "llamacpp":
        resolved = await _embedded(gen, "llamacpp", "embedded llama.cpp")
    else:
        resolved = ResolvedBackend(gen, gen.backend, f"{gen.backend} at {gen.url}")
    log.info(
        "generation.backend",
        backend=resolved.gen.backend,
        configured=gen.backend,
        model=resolved.gen.model,
        why=resolved.why,
    )
    decision = (resolved.gen.backend, resolved.gen.model, resolved.gen.model_path, resolved.why)
    _cache[key] = decision
    # resolving the resolved settings again (ensure_jobs after the service) is the same answer
    _cache[_key(resolved.gen)] = decision
    return resolved


def _configured(gen: GeneratorSettings, why: str) -> str:
    return "auto" if why.startswith("auto:") else gen.backend


async def _embedded(gen: GeneratorSettings, configured: str, why: str) -> ResolvedBackend:
    path = _model_path(gen)
    name = await embedded_model_name(path)
    resolved_gen = dataclasses.replace(gen, backend="llamacpp", model=name, model_path=path)
    return ResolvedBackend(resolved_gen, configured, f"{why} ({path.name})")


def _model_path(gen: GeneratorSettings) -> Path:
    try:
        return gen.model_path or default_gguf_path()
    except LlamaServerError as exc:
        raise ConfigurationError(str(exc), reason="model_file") from None


async def embedded_model_name(path: Path) -> str:
    """`<file stem>-<first 8 hex of its sha256>`; ConfigurationError naming a bad file."""
    try:
        digest = await anyio.to_thread.run_sync(_file_digest, path)
    except LlamaServerError as exc:
        raise ConfigurationError(f"[generator] model_path: {exc}", reason="model_file") from None
    return f"{path.stem}-{digest[:8]}"


def _file_digest(path: Path) -> str:
    check_gguf(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def embedded_spec(gen: GeneratorSettings, log_path: Path | None) -> LlamaServerSpec:
    """How the embedded engine runs for resolved settings (`backend == "llamacpp"`)."""
    assert gen.model_path is not None, "resolve_backend sets model_path"
    return LlamaServerSpec(
        model_path=gen.model_path,
        n_ctx=gen.num_ctx,
        n_threads=gen.engine_threads or default_threads(),
        model_alias=gen.model,
        log_path=log_path,
    )
