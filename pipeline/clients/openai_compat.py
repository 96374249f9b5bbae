"""The OpenAI-compatible API (vLLM, llama.cpp, llama-cpp-python): chat and text completions.

`OpenAIClient` is the generator client: `/v1/chat/completions` with JSON output.
`stream_completion` streams a reply (`/v1/chat/completions`, or `/v1/completions` for a prompt
rendered by doctune) for the embedded registry's smoke test, `doctune serve` and `doctune ask`.

Servers differ in the `response_format` they take. OpenAI and vLLM take
`{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`; llama-cpp-python only
`{"type": "json_object", "schema": ...}` (its `json_schema` answers 500 "Input should be 'text'
or 'json_object'"); llama.cpp's own server takes both. When a server refuses the format, the
client falls back once — json_schema → json_object + schema → the schema in the prompt — and
remembers what worked for that endpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog

from pipeline.clients.errors import GeneratorError, RetryableError, TruncatedError
from pipeline.clients.http import (
    Completion,
    error_for_status,
    error_message,
    is_format_refusal,
    map_transport_errors,
)
from pipeline.settings import GeneratorSettings

__all__ = [
    "FORMAT_MODES",
    "Delta",
    "EngineError",
    "FormatMode",
    "OpenAIClient",
    "format_request",
    "stream_completion",
]

log = structlog.get_logger(__name__)

FormatMode = Literal["json_schema", "json_object", "prompt"]
FORMAT_MODES: tuple[FormatMode, ...] = ("json_schema", "json_object", "prompt")
SCHEMA_NAME = "qa_reply"


def format_request(
    mode: FormatMode, messages: list[dict[str, str]], schema: dict[str, Any]
) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
    """The messages and `response_format` for one format mode."""
    if mode == "json_schema":
        return messages, {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }
    if mode == "json_object":
        return messages, {"type": "json_object", "schema": schema}
    # No structured output at all: say it in words, at the end of the last message.
    last = dict(messages[-1])
    last["content"] += (
        "\n\nReply with one JSON object only, no other text, matching this JSON schema:\n"
        + json.dumps(schema, separators=(",", ":"))
    )
    return [*messages[:-1], last], None


class OpenAIClient:
    """One OpenAI-compatible server; `url` may or may not end in `/v1`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        gen: GeneratorSettings,
        *,
        format_mode: FormatMode = "json_schema",
    ) -> None:
        self.session = session
        self.url = url
        self.gen = gen
        self.format_mode: FormatMode = format_mode

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        # the embedded engine moves to a new port when it restarts
        base = value.rstrip("/")
        self._url = base[: -len("/v1")] if base.endswith("/v1") else base

    def __repr__(self) -> str:
        return f"OpenAIClient({self.url!r}, model={self.gen.model!r}, format={self.format_mode})"

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
        """One chat completion; raises a typed GeneratorError on anything but a finished reply.

        A refused `response_format` moves this endpoint to the next simpler format and asks
        again at once (it says nothing about the job).
        """
        while True:
            try:
                return await self._complete(messages, schema, self.format_mode)
            except _FormatRefused as refused:
                if refused.mode != self.format_mode:
                    continue  # another request already moved on
                next_index = FORMAT_MODES.index(refused.mode) + 1
                if next_index >= len(FORMAT_MODES):
                    raise refused.error from None
                self.format_mode = FORMAT_MODES[next_index]
                log.warning(
                    "generation.format_fallback",
                    url=self.url,
                    refused=refused.mode,
                    now=self.format_mode,
                    error=refused.message[:300],
                )

    async def _complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any], mode: FormatMode
    ) -> Completion:
        messages, response_format = format_request(mode, messages, schema)
        body: dict[str, Any] = {
            "model": self.gen.model,
            "messages": messages,
            "temperature": self.gen.temperature,
            "seed": self.gen.seed,
            "max_tokens": self.gen.num_predict,
            "stream": self.gen.stream,
        }
        if response_format is not None:
            body["response_format"] = response_format
        if self.gen.stream:
            body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        async with (
            map_transport_errors(self.url),
            self.session.post(f"{self.url}/v1/chat/completions", json=body) as resp,
        ):
            if resp.status != 200:
                message = await error_message(resp)
                error = error_for_status(resp.status, message, self.gen.model, self.url)
                if response_format is not None and is_format_refusal(resp.status, message):
                    raise _FormatRefused(mode, error, message)
                raise error
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
        async for event in sse_events(resp, errors="strict"):
            if event is _DONE:
                return "".join(parts), finish or "stop", usage
            if "error" in event:
                raise RetryableError(str(event["error"])[:500], reason="stream_error")
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                parts.append(str((choice.get("delta") or {}).get("content") or ""))
                finish = choice.get("finish_reason") or finish
        raise RetryableError("stream ended without [DONE]", reason="stream_incomplete")


class _FormatRefused(Exception):
    def __init__(self, mode: FormatMode, error: GeneratorError, message: str) -> None:
        super().__init__(message)
        self.mode = mode
        self.error = error
        self.message = message


def _first_choice(reply: Any) -> dict[str, Any]:
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise RetryableError(f"reply without choices: {reply!r}"[:500], reason="bad_response")
    return choices[0]


# ---------------------------------------------------------------------- server-sent events

_DONE: Any = object()  # what `sse_events` yields for `data: [DONE]` (compared by identity)


async def sse_events(resp: aiohttp.ClientResponse, *, errors: str) -> AsyncIterator[Any]:
    """The `data:` events of a streamed reply, parsed; `_DONE` for `data: [DONE]`, then stop.

    A line that is not JSON raises json.JSONDecodeError (the caller's error type wraps it).
    """
    async for raw in resp.content:
        line = raw.decode("utf-8", errors=errors).strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            yield _DONE
            return
        yield json.loads(data)


class EngineError(RuntimeError):
    """The server answered a streamed completion with an error or an unreadable stream."""


@dataclass(frozen=True)
class Delta:
    """One streamed piece: text, and on the last piece why generation ended."""

    text: str
    finish_reason: str | None = None


async def stream_completion(
    session: aiohttp.ClientSession, base_url: str, body: dict[str, Any]
) -> AsyncIterator[Delta]:
    """Stream a reply piece by piece: `/v1/completions` when `body` has a `prompt`, else
    `/v1/chat/completions`; EngineError for an error status, line or unreadable stream."""
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    async with session.post(base_url + path, json={**body, "stream": True}) as resp:
        if resp.status != 200:
            text = (await resp.read())[:500].decode(errors="replace")
            raise EngineError(f"{path}: HTTP {resp.status}: {text}")
        events = sse_events(resp, errors="replace")
        while True:
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            except ValueError as exc:
                raise EngineError(f"unreadable stream line: {exc}") from exc
            if event is _DONE:
                return
            if not isinstance(event, dict):
                continue
            if "error" in event:
                raise EngineError(f"llama.cpp server error: {event['error']}")
            choice = (event.get("choices") or [{}])[0]
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content") or ""
            reason = choice.get("finish_reason")
            if text or reason:
                yield Delta(str(text), reason)
