"""Chat with a llama.cpp server child through a version's own prompt format.

Exported GGUFs carry no chat template, and llama-cpp-python would fall back to a generic
one; so a registered version's messages are rendered here with the exact Go template of its
Modelfile (the one proven equal to the training template) and sent to `/v1/completions`
with its stop strings. Without a `VersionPrompt` (the bundled base GGUF, which carries its
own template) the request goes to `/v1/chat/completions` unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pipeline.clients.openai_compat import Delta, stream_completion
from pipeline.ship.gotemplate import render_go_template
from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.template import ollama_messages

__all__ = ["render_prompt", "stream_chat"]


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
    """Stream a reply from the llama.cpp server at `base_url`, piece by piece (EngineError)."""
    body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    if model:
        body["model"] = model
    if prompt is not None:
        body.update(prompt=render_prompt(prompt, messages), stop=prompt.stop)
    else:
        body["messages"] = messages
    async for delta in stream_completion(session, base_url, body):
        yield delta
