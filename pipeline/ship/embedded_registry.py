"""The embedded registry: versioned GGUF files under `models_dir`, served by llama.cpp.

Layout under `<models_dir>/registry/<model_name>/`:

    versions/<run-id>/model.gguf     the exported model (hard link to the run's export, or a copy)
    versions/<run-id>/Modelfile      FROM/TEMPLATE/PARAMETER stop: `ollama create` reproduces it
    versions/<run-id>/version.json   tag, prompt (template, stop, bos), when it was created
    current.json                     {"alias", "tag", "run_id", "gguf", "switched_at"}

A version directory is assembled as `<run-id>.tmp/` and renamed into place, so a present
directory is complete. `current.json` is replaced with `os.replace` (atomic on POSIX), the
one step that changes what `serve`/`ask` use: a kill at any point leaves either the old or the
new pointer, never half of one. Smoke tests run the GGUF in a `LlamaServer` child.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import LlamaServerError, LlamaServerSpec, check_gguf
from pipeline.clients.openai_compat import EngineError
from pipeline.settings import Settings
from pipeline.ship.backends import (
    SMOKE_MAX_TOKENS,
    BackendName,
    RegistrationError,
    StagedVersion,
)
from pipeline.ship.modelfile import MODELFILE_NAME, VersionPrompt, write_modelfile
from pipeline.ship.prompted import stream_chat

__all__ = ["CurrentVersion", "EmbeddedRegistry", "RegistryPointerError", "run_of_tag"]

log = structlog.get_logger(__name__)

GGUF_NAME = "model.gguf"
POINTER_NAME = "current.json"


class RegistryPointerError(RuntimeError):
    """The pointer names a version whose files are missing or unreadable."""


@dataclass(frozen=True)
class CurrentVersion:
    """What the alias serves in the embedded registry."""

    tag: str
    run_id: str
    gguf: Path
    prompt: VersionPrompt
    switched_at: float


def run_of_tag(tag: str) -> str:
    """`doctune:20261201T…-abcd` → `20261201T…-abcd`."""
    return tag.split(":", 1)[1] if ":" in tag else tag


class EmbeddedRegistry:
    """The `llamacpp` registry backend (see the module docstring for the layout)."""

    name: BackendName = "llamacpp"

    def __init__(self, root: Path, *, n_threads: int = 0, smoke_timeout_s: float = 180.0) -> None:
        self.root = root
        self.n_threads = n_threads
        self.smoke_timeout_s = smoke_timeout_s

    @classmethod
    def for_settings(cls, settings: Settings) -> EmbeddedRegistry:
        root = settings.paths.models_dir / "registry" / settings.registry.model_name
        return cls(root, n_threads=settings.serve.n_threads)

    def version_dir(self, tag: str) -> Path:
        return self.root / "versions" / run_of_tag(tag)

    @property
    def pointer(self) -> Path:
        return self.root / POINTER_NAME

    def read_version(self, tag: str) -> tuple[Path, VersionPrompt]:
        """(GGUF path, prompt) of a stored version; RegistryPointerError when unusable."""
        directory = self.version_dir(tag)
        try:
            meta = json.loads((directory / "version.json").read_text(encoding="utf-8"))
            prompt = VersionPrompt(**meta["prompt"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryPointerError(f"version {tag}: unreadable {directory}: {exc}") from exc
        gguf = directory / GGUF_NAME
        try:
            check_gguf(gguf)
        except LlamaServerError as exc:
            raise RegistryPointerError(f"version {tag}: {exc}") from exc
        return gguf, prompt

    async def has_version(self, tag: str) -> bool:
        try:
            self.read_version(tag)
        except RegistryPointerError:
            return False
        return True

    async def create_version(
        self, tag: str, staged: StagedVersion, on_status: Callable[[str], None] | None
    ) -> None:
        source = staged.files.get(GGUF_NAME)
        if source is None:
            raise ValueError("the llamacpp registry stores GGUF files; nothing was exported")
        check_gguf(source)  # a corrupt export fails here, before anything is stored
        final = self.version_dir(tag)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # leftovers of an interrupted attempt
        shutil.rmtree(final, ignore_errors=True)  # an incomplete or corrupt earlier copy
        tmp.mkdir(parents=True)
        _link_or_copy(source, tmp / GGUF_NAME)
        write_modelfile(tmp, f"./{GGUF_NAME}", staged.prompt, tag=tag)
        meta = {
            "tag": tag,
            "prompt": {
                "template": staged.prompt.template,
                "stop": staged.prompt.stop,
                "bos": staged.prompt.bos,
            },
            "source": str(source),
            "created_at": time.time(),
        }
        (tmp / "version.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, final)
        if on_status is not None:
            on_status(f"stored {final / GGUF_NAME}")

    async def smoke_test(self, tag: str, question: str) -> str:
        gguf, prompt = self.read_version(tag)
        spec = LlamaServerSpec(
            model_path=gguf,
            n_ctx=2048,
            model_alias=tag,
            log_path=self.root / "logs" / f"smoke-{run_of_tag(tag)}.log",
            start_timeout_s=self.smoke_timeout_s,
        )
        if self.n_threads > 0:
            spec = dataclasses.replace(spec, n_threads=self.n_threads)
        pieces: list[str] = []
        finish: str | None = None
        try:
            async with (
                LlamaServer(spec) as server,
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.smoke_timeout_s)
                ) as session,
            ):
                async for delta in stream_chat(
                    session,
                    server.base_url,
                    [{"role": "user", "content": question}],
                    prompt=prompt,
                    max_tokens=SMOKE_MAX_TOKENS,
                ):
                    pieces.append(delta.text)
                    finish = delta.finish_reason or finish
        except (LlamaServerError, EngineError, aiohttp.ClientError, TimeoutError) as exc:
            raise RegistrationError(f"smoke test of {tag}: {exc}") from exc
        reply = "".join(pieces)
        if finish is None or not reply.strip():
            raise RegistrationError(
                f"smoke test of {tag}: empty or unfinished reply {reply!r:.300}"
                f" (finish_reason={finish})"
            )
        log.info("register.smoke", tag=tag, finish_reason=finish, reply=reply[:200])
        return reply

    async def point_alias(self, tag: str, alias: str) -> None:
        gguf, _ = self.read_version(tag)
        record = {
            "alias": alias,
            "tag": tag,
            "run_id": run_of_tag(tag),
            "gguf": str(gguf),
            "switched_at": time.time(),
        }
        tmp = self.root / f".{POINTER_NAME}.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.pointer)

    async def delete_version(self, tag: str) -> bool:
        directory = self.version_dir(tag)
        if not directory.exists():
            return False
        shutil.rmtree(directory)
        return True

    def current(self) -> CurrentVersion | None:
        """The version the pointer names (None: nothing registered); raises when unusable."""
        try:
            record: dict[str, Any] = json.loads(self.pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryPointerError(f"{self.pointer}: unreadable: {exc}") from exc
        tag = str(record.get("tag", ""))
        gguf, prompt = self.read_version(tag)
        return CurrentVersion(
            tag, run_of_tag(tag), gguf, prompt, float(record.get("switched_at", 0.0))
        )

    def modelfile_path(self, tag: str) -> Path:
        return self.version_dir(tag) / MODELFILE_NAME


def _link_or_copy(source: Path, dest: Path) -> None:
    """A hard link when on the same file system (no second copy of the weights), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
