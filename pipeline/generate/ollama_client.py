"""Ollama's native API: `/api/chat` with a JSON-schema `format`, streamed or not."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from pipeline.generate.errors import RetryableError, TruncatedError
from pipeline.generate.http import (
    Completion,
    error_for_status,
    error_message,
    map_transport_errors,
)
from pipeline.settings import GeneratorSettings

__all__ = ["OllamaClient", "keep_alive_value"]


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
        async for raw in resp.content:
            line = raw.strip()
            if not line:
                continue
            event = json.loads(line)
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
