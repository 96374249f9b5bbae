"""Ollama's chat API: generation (`/api/chat` with a JSON-schema `format`), asking, smoke tests.

`OllamaClient` is the generator client (typed `GeneratorError`s, a `Completion`); `stream_chat`
streams a registered version's answer for `doctune ask`; `chat_once` is registration's smoke
test (one non-streamed reply, `OllamaError` on failure).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pipeline.clients.errors import RetryableError, TruncatedError
from pipeline.clients.http import (
    Completion,
    error_for_status,
    error_message,
    map_transport_errors,
)
from pipeline.clients.ollama.wire import OllamaError, ndjson, request
from pipeline.settings import GeneratorSettings

__all__ = ["OllamaClient", "chat_once", "keep_alive_value", "stream_chat"]


def keep_alive_value(text: str) -> int | float | str:
    """Ollama's `keep_alive`: a number of seconds goes as a JSON number (`-1` = forever, which
    Ollama refuses as the string "-1"); a duration such as "30m" goes as a string."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


class OllamaClient:
    """One Ollama server. Options are the same on every request: changing load-time options
    (`num_ctx`) would make Ollama reload the model."""

    def __init__(self, session: aiohttp.ClientSession, url: str, gen: GeneratorSettings) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.gen = gen
        self.options = {
            "num_predict": gen.num_predict,
            "temperature": gen.temperature,
            "seed": gen.seed,
            "num_ctx": gen.num_ctx,
        }

    def __repr__(self) -> str:
        return f"OllamaClient({self.url!r}, model={self.gen.model!r})"

    async def probe(self) -> None:
        """Reachability only (`GET /api/version`)."""
        async with (
            map_transport_errors(self.url),
            self.session.get(f"{self.url}/api/version") as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                raise error_for_status(resp.status, message, self.gen.model, self.url)
            await resp.read()

    async def warm_up(self) -> None:
        """Prompt-less generate: loads the model (with our `num_ctx`) before the first job."""
        body: dict[str, Any] = {"model": self.gen.model, "options": {"num_ctx": self.gen.num_ctx}}
        if self.gen.keep_alive:
            body["keep_alive"] = keep_alive_value(self.gen.keep_alive)
        async with (
            map_transport_errors(self.url),
            self.session.post(f"{self.url}/api/generate", json=body) as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                raise error_for_status(resp.status, message, self.gen.model, self.url)
            await resp.read()

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> Completion:
        """One chat request; raises a typed GeneratorError on anything but a finished reply."""
        body: dict[str, Any] = {
            "model": self.gen.model,
            "messages": messages,
            "format": schema,
            "stream": self.gen.stream,
            "options": self.options,
        }
        if self.gen.keep_alive:
            body["keep_alive"] = keep_alive_value(self.gen.keep_alive)
        started = time.perf_counter()
        async with (
            map_transport_errors(self.url),
            self.session.post(f"{self.url}/api/chat", json=body) as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                raise error_for_status(resp.status, message, self.gen.model, self.url)
            if self.gen.stream:
                content, final = await self._read_stream(resp)
            else:
                final = await resp.json(content_type=None)
                if not isinstance(final, dict) or "error" in final:
                    raise RetryableError(f"error reply: {final!r}"[:500], reason="error_reply")
                content = str((final.get("message") or {}).get("content") or "")
        return self._completion(content, final, started)

    async def _read_stream(self, resp: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
        parts: list[str] = []
        async for event in ndjson(resp):
            if "error" in event:  # Ollama reports failures mid-stream with status 200
                raise RetryableError(str(event["error"])[:500], reason="stream_error")
            parts.append(str((event.get("message") or {}).get("content") or ""))
            if event.get("done"):
                return "".join(parts), event
        raise RetryableError("stream ended without a done line", reason="stream_incomplete")

    def _completion(self, content: str, final: dict[str, Any], started: float) -> Completion:
        done_reason = str(final.get("done_reason") or "stop")
        if done_reason == "length":
            raise TruncatedError(
                f"reply cut at num_predict={self.gen.num_predict} tokens", reason="truncated"
            )
        return Completion(
            content=content,
            prompt_tokens=final.get("prompt_eval_count"),
            completion_tokens=final.get("eval_count"),
            latency_ms=(time.perf_counter() - started) * 1000,
            done_reason=done_reason,
        )


async def stream_chat(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    messages: list[dict[str, str]],
    *,
    options: dict[str, Any],
) -> AsyncIterator[str]:
    """A streamed `/api/chat` reply, piece by piece; OllamaError on an error status or line."""
    body = {"model": model, "messages": messages, "stream": True, "options": options}
    async with session.post(url.rstrip("/") + "/api/chat", json=body) as resp:
        if resp.status != 200:
            raise OllamaError(
                f"{model}: Ollama HTTP {resp.status}: {await resp.text()}", status=resp.status
            )
        async for line in ndjson(resp):
            if "error" in line:
                raise OllamaError(f"{model}: Ollama: {line['error']}", status=200)
            text = str((line.get("message") or {}).get("content", ""))
            if text:
                yield text


async def chat_once(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    messages: list[dict[str, str]],
    *,
    options: dict[str, Any],
    connect_timeout_s: float,
    read_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """One non-streamed `/api/chat` reply (registration's smoke test)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s)
    _, body = await request(
        session,
        "POST",
        url.rstrip("/"),
        "/api/chat",
        timeout=timeout,
        json={"model": model, "messages": messages, "stream": False, "options": options},
    )
    return dict(json.loads(body))
