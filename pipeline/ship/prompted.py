"""Chat with a llama.cpp server child through a version's own prompt format.

Exported GGUFs carry no chat template, and llama-cpp-python would fall back to a generic
one; so a registered version's messages are rendered here with the exact Go template of its
Modelfile (the one proven equal to the training template) and sent to `/v1/completions`
with its stop strings. Without a `VersionPrompt` (the bundled base GGUF, which carries its
own template) the request goes to `/v1/chat/completions` unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from pipeline.ship.gotemplate import render_go_template
from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.template import ollama_messages

__all__ = ["Delta", "EngineError", "render_prompt", "stream_chat"]


class EngineError(RuntimeError):
    """The llama.cpp server answered with an error or an unreadable stream."""


@dataclass(frozen=True)
class Delta:
    """One streamed piece: text, and on the last piece why generation ended."""

    text: str
    finish_reason: str | None = None


def render_prompt(prompt: VersionPrompt, messages: list[dict[str, str]]) -> str:
    """The exact text the version sees (BOS re-added: /v1/completions does not add it)."""
    return prompt.bos + render_go_template(prompt.template, ollama_messages(messages))


async def stream_chat(
    session: aiohttp.ClientSession,
    base_url: str,
    messages: list[dict[str, str]],
    *,
    prompt: VersionPrompt | None,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    model: str | None = None,
) -> AsyncIterator[Delta]:
    """Stream a reply from the llama.cpp server at `base_url`, piece by piece."""
    body: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "stream": True,
    }
    if model:
        body["model"] = model
    if prompt is not None:
        path = "/v1/completions"
        body.update(prompt=render_prompt(prompt, messages), stop=prompt.stop)
    else:
        path = "/v1/chat/completions"
        body["messages"] = messages
    async with session.post(base_url + path, json=body) as resp:
        if resp.status != 200:
            text = (await resp.read())[:500].decode(errors="replace")
            raise EngineError(f"{path}: HTTP {resp.status}: {text}")
        async for event in _sse_events(resp):
            choice = (event.get("choices") or [{}])[0]
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content") or ""
            reason = choice.get("finish_reason")
            if text or reason:
                yield Delta(str(text), reason)


async def _sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    async for raw in resp.content:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise EngineError(f"unreadable stream line {data[:200]!r}") from exc
        if isinstance(event, dict) and "error" in event:
            raise EngineError(f"llama.cpp server error: {event['error']}")
        if isinstance(event, dict):
            yield event
