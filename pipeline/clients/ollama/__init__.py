"""Ollama's HTTP API, the one module doctune talks to Ollama through (split by API area).

- `wire`: errors, error bodies, NDJSON streams, the request helper, `ollama_answers`;
- `chat`: `/api/chat` and `/api/generate` — the generator client, `doctune ask`, smoke tests;
- `models`: blobs, create, copy, delete, show, tags, version — registration.
"""

from pipeline.clients.ollama.chat import OllamaClient, chat_once, keep_alive_value, stream_chat
from pipeline.clients.ollama.models import (
    MIN_CREATE_VERSION,
    OllamaModels,
    file_digest,
    parse_version,
)
from pipeline.clients.ollama.wire import (
    OllamaError,
    OllamaTooOld,
    OllamaUnavailable,
    ollama_answers,
)

__all__ = [
    "MIN_CREATE_VERSION",
    "OllamaClient",
    "OllamaError",
    "OllamaModels",
    "OllamaTooOld",
    "OllamaUnavailable",
    "chat_once",
    "file_digest",
    "keep_alive_value",
    "ollama_answers",
    "parse_version",
    "stream_chat",
]
