"""OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp server) with a JSON-schema format."""

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

__all__ = ["OpenAIClient"]


class OpenAIClient:
    """One OpenAI-compatible server; `url` may or may not end in `/v1`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, gen: GeneratorSettings) -> None:
        base = url.rstrip("/")
        self.session = session
        self.url = base[: -len("/v1")] if base.endswith("/v1") else base
        self.gen = gen

    def __repr__(self) -> str:
        return f"OpenAIClient({self.url!r}, model={self.gen.model!r})"

    async def probe(self) -> None:
        """Reachability (`GET /v1/models`)."""
        await self._models()

    async def warm_up(self) -> None:
        """These servers load their model at start; checking reachability is all there is."""
        await self._models()

    async def _models(self) -> list[str]:
        async with (
            map_transport_errors(self.url),
            self.session.get(f"{self.url}/v1/models") as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                raise error_for_status(resp.status, message, self.gen.model, self.url)
            body = await resp.json(content_type=None)
        return [str(m.get("id")) for m in (body.get("data") or []) if isinstance(m, dict)]

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> Completion:
        """One chat completion; raises a typed GeneratorError on anything but a finished reply."""
        body: dict[str, Any] = {
            "model": self.gen.model,
            "messages": messages,
            "temperature": self.gen.temperature,
            "seed": self.gen.seed,
            "max_tokens": self.gen.num_predict,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "qa_pairs", "schema": schema, "strict": True},
            },
            "stream": self.gen.stream,
        }
        if self.gen.stream:
            body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        async with (
            map_transport_errors(self.url),
            self.session.post(f"{self.url}/v1/chat/completions", json=body) as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                raise error_for_status(resp.status, message, self.gen.model, self.url)
            if self.gen.stream:
                content, finish, usage = await self._read_sse(resp)
            else:
                reply = await resp.json(content_type=None)
                choice = _first_choice(reply)
                content = str((choice.get("message") or {}).get("content") or "")
                finish, usage = str(choice.get("finish_reason") or "stop"), reply.get("usage")
        if finish == "length":
            raise TruncatedError(f"reply cut at max_tokens={self.gen.num_predict}")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            content=content,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_ms=(time.perf_counter() - started) * 1000,
            done_reason=finish,
        )

    async def _read_sse(self, resp: aiohttp.ClientResponse) -> tuple[str, str, Any]:
        parts: list[str] = []
        finish, usage = "", None
        async for raw in resp.content:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return "".join(parts), finish or "stop", usage
            event = json.loads(data)
            if "error" in event:
                raise RetryableError(str(event["error"])[:500], reason="stream_error")
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                parts.append(str((choice.get("delta") or {}).get("content") or ""))
                finish = choice.get("finish_reason") or finish
        raise RetryableError("stream ended without [DONE]", reason="stream_incomplete")


def _first_choice(reply: Any) -> dict[str, Any]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise RetryableError(f"reply without choices: {reply!r}"[:500], reason="bad_response")
    return choices[0]
