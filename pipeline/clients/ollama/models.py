"""Ollama's model-management API: version, blobs, create, copy, delete, show, tags.

Shapes follow ollama/ollama docs/api.md and server/routes.go. Blobs are hashed and uploaded
streamed from disk (never read whole into memory); `create` streams status lines and turns
an in-stream `{"error": ...}` line (sent with HTTP 200) into an exception like a 4xx/5xx.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import anyio

from pipeline.clients.http import error_text
from pipeline.clients.ollama.wire import (
    OllamaError,
    OllamaTooOld,
    OllamaUnavailable,
    ndjson,
    request,
)

__all__ = ["MIN_CREATE_VERSION", "OllamaModels", "file_digest", "parse_version"]

# /api/create with `files`/`template`/`parameters` replaced the Modelfile body in v0.5.5;
# older servers answer "path or Modelfile are required".
MIN_CREATE_VERSION = (0, 5, 5)
_CHUNK_BYTES = 4 * 1024 * 1024


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, read in chunks (blocking: call it in a worker thread)."""
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK_BYTES):
            hasher.update(block)
    return f"sha256:{hasher.hexdigest()}"


def parse_version(text: str) -> tuple[int, ...] | None:
    """(major, minor, patch) from e.g. "0.12.6" or "0.5.5-rc1"; None when unparseable."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return tuple(int(x) for x in match.groups()) if match else None


class OllamaModels:
    """One aiohttp session against one Ollama server; use as an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 60.0,
        create_timeout_s: float = 3600.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.create_timeout_s = create_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OllamaModels:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout_s, sock_read=self.request_timeout_s
            )
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OllamaModels must be used as `async with`")
        return self._session

    async def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> tuple[int, bytes]:
        return await request(self.session, method, self.url, path, ok=ok, **kwargs)

    async def version(self) -> str:
        _, body = await self._request("GET", "/api/version")
        return str(json.loads(body).get("version", ""))

    async def require_create_api(self) -> str:
        """The server version; raises OllamaTooOld when it predates the create API."""
        text = await self.version()
        parsed = parse_version(text)
        # Development builds report 0.0.0: assume they are current.
        if parsed is not None and parsed != (0, 0, 0) and parsed < MIN_CREATE_VERSION:
            need = ".".join(map(str, MIN_CREATE_VERSION))
            raise OllamaTooOld(
                f"Ollama {text} at {self.url} is older than {need}, the first version whose "
                f"/api/create accepts files+template+parameters; upgrade Ollama"
            )
        return text

    async def blob_exists(self, digest: str) -> bool:
        status, _ = await self._request("HEAD", f"/api/blobs/{digest}", ok=(200, 404))
        return status == 200

    async def push_blob(self, path: Path, digest: str) -> None:
        """Upload `path` as blob `digest`, streamed from disk."""
        size = (await anyio.Path(path).stat()).st_size
        await self._request(
            "POST",
            f"/api/blobs/{digest}",
            ok=(200, 201),
            data=_file_chunks(path),
            headers={"Content-Length": str(size)},
        )

    async def ensure_blob(self, path: Path) -> tuple[str, bool]:
        """(digest, uploaded): hash `path`, and upload it only when the server lacks it."""
        digest = await anyio.to_thread.run_sync(file_digest, path)
        if await self.blob_exists(digest):
            return digest, False
        await self.push_blob(path, digest)
        return digest, True

    async def create(
        self, body: dict[str, Any], *, on_status: Callable[[str], None] | None = None
    ) -> list[str]:
        """POST /api/create (streamed); returns the status lines; raises on any error."""
        statuses: list[str] = []
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout_s, sock_read=self.create_timeout_s
        )
        try:
            async with self.session.post(
                self.url + "/api/create", json={**body, "stream": True}, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise OllamaError(
                        f"create {body.get('model')}: HTTP {resp.status}: "
                        f"{error_text(await resp.read())}",
                        status=resp.status,
                    )
                async for line in ndjson(resp):
                    if "error" in line:
                        raise OllamaError(
                            f"create {body.get('model')}: {line['error']}", status=200
                        )
                    status = str(line.get("status", ""))
                    statuses.append(status)
                    if on_status is not None:
                        on_status(status)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise OllamaUnavailable(
                f"create {body.get('model')}: connection lost: {exc!r}"
            ) from exc
        if not statuses or statuses[-1] != "success":
            raise OllamaError(
                f"create {body.get('model')}: stream ended without success: {statuses[-3:]}"
            )
        return statuses

    async def copy(self, source: str, destination: str) -> None:
        await self._request(
            "POST", "/api/copy", json={"source": source, "destination": destination}
        )

    async def delete(self, model: str) -> bool:
        """Delete `model`; False when it did not exist."""
        status, _ = await self._request(
            "DELETE", "/api/delete", ok=(200, 404), json={"model": model}
        )
        return status == 200

    async def show(self, model: str) -> dict[str, Any] | None:
        """The model's details, or None when it does not exist."""
        status, body = await self._request(
            "POST", "/api/show", ok=(200, 404), json={"model": model}
        )
        return dict(json.loads(body)) if status == 200 else None

    async def tags(self) -> list[dict[str, Any]]:
        _, body = await self._request("GET", "/api/tags")
        return list(json.loads(body).get("models", []))


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while block := await anyio.to_thread.run_sync(fh.read, _CHUNK_BYTES):
            yield block
