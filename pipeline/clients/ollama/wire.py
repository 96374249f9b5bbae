"""What every Ollama call shares: its errors, error bodies, NDJSON streams, one request helper.

Ollama answers errors as `{"error": "..."}` with an HTTP status, and mid-stream as an
`{"error": ...}` line with status 200 (docs/api.md); both become an `OllamaError` here for the
model-management calls (generation maps them to its own typed errors, `pipeline.clients.http`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pipeline.clients.http import error_text

__all__ = [
    "OllamaError",
    "OllamaTooOld",
    "OllamaUnavailable",
    "ndjson",
    "ollama_answers",
    "request",
]


class OllamaError(Exception):
    """Ollama answered with an error (HTTP status, or an error line in a stream)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OllamaUnavailable(OllamaError):
    """Ollama could not be reached (connection refused, reset, timeout)."""


class OllamaTooOld(OllamaError):
    """The server predates the create API doctune uses."""


async def ndjson(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a streamed reply, one a line (blank lines skipped)."""
    async for raw in resp.content:
        line = raw.strip()
        if line:
            yield dict(json.loads(line))


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    path: str,
    *,
    ok: tuple[int, ...] = (200,),
    **kwargs: Any,
) -> tuple[int, bytes]:
    """(status, body) of one request; OllamaError for a status not in `ok`,
    OllamaUnavailable when the server cannot be reached."""
    try:
        async with session.request(method, url + path, **kwargs) as resp:
            body = await resp.read()
            if resp.status not in ok:
                raise OllamaError(
                    f"{method} {path}: HTTP {resp.status}: {error_text(body)}",
                    status=resp.status,
                )
            return resp.status, body
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise OllamaUnavailable(f"{method} {path}: Ollama unreachable at {url}: {exc!r}") from exc


async def ollama_answers(url: str, *, timeout_s: float = 2.0) -> bool:
    """True when an Ollama server answers `GET /api/version` at `url` (backend "auto")."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url.rstrip("/") + "/api/version") as resp,
        ):
            if resp.status != 200:
                return False
            body = json.loads(await resp.read())
            return isinstance(body, dict) and "version" in body
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return False
