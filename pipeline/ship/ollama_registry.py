"""The Ollama registry backend: versions as Ollama models (`RegistryBackend`).

A version is imported as blobs + `/api/create` (files by digest, the template and stops as in
its Modelfile), smoke-tested with one `/api/chat`, and the alias moved with `/api/copy`; all
through Ollama's model-management client, `pipeline.clients.ollama`.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from pipeline.clients.ollama import OllamaModels, chat_once
from pipeline.ship.backends import (
    SMOKE_OPTIONS,
    BackendName,
    RegistrationError,
    StagedVersion,
)
from pipeline.ship.modelfile import VersionPrompt

__all__ = ["OllamaRegistry", "create_body"]

log = structlog.get_logger(__name__)


class OllamaRegistry:
    """Versions as Ollama models: blobs + /api/create, /api/chat smoke test, /api/copy alias."""

    name: BackendName = "ollama"

    def __init__(self, api: OllamaModels, *, quantize: str = "") -> None:
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
        reply = await chat_once(
            self.api.session,
            self.api.url,
            tag,
            [{"role": "user", "content": question}],
            options=SMOKE_OPTIONS,
            connect_timeout_s=self.api.connect_timeout_s,
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
