"""What the model-server clients share: one session, typed errors, the Completion record.

Both generator clients (`ollama.OllamaClient`, `openai_compat.OpenAIClient`) run on the one
`open_session` of a generation service, map transport failures with `map_transport_errors` and
non-200 replies with `error_for_status`; every client reads an error body with `error_text`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from pipeline.clients.errors import (
    ConfigurationError,
    FinalError,
    GeneratorError,
    ModelMissingError,
    OutageError,
    RetryableError,
    WrongServerError,
)
from pipeline.settings import GeneratorSettings

__all__ = [
    "Completion",
    "GeneratorClient",
    "error_for_status",
    "error_message",
    "error_text",
    "is_format_refusal",
    "map_transport_errors",
    "open_session",
    "request_timeout",
]


@dataclass(frozen=True)
class Completion:
    """One successful LLM reply (its content is not validated yet)."""

    content: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    done_reason: str


class GeneratorClient(Protocol):
    """A backend: Ollama native or OpenAI-compatible."""

    url: str

    async def complete(
        self, messages: list[dict[str, str]], schema: dict[str, Any]
    ) -> Completion: ...

    async def warm_up(self) -> None: ...

    async def probe(self) -> None: ...


def request_timeout(gen: GeneratorSettings) -> aiohttp.ClientTimeout:
    """Explicit timeouts: the whole request, and connecting (a dead host fails fast)."""
    return aiohttp.ClientTimeout(total=gen.timeout_s, sock_connect=gen.connect_timeout_s)


@asynccontextmanager
async def open_session(
    gen: GeneratorSettings,
    connections: int,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> AsyncIterator[aiohttp.ClientSession]:
    """The one ClientSession of a generation service (connection pool sized to the bound);
    `trace_configs` are aiohttp's own request hooks (benchmarks record what was sent)."""
    connector = aiohttp.TCPConnector(limit=max(connections, 1) + 4, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=request_timeout(gen),
        raise_for_status=False,
        trace_configs=list(trace_configs) or None,
    ) as session:
        yield session


@asynccontextmanager
async def map_transport_errors(url: str) -> AsyncIterator[None]:
    """Translate aiohttp/timeout exceptions into the typed generator errors."""
    try:
        yield
    except GeneratorError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise OutageError(f"connecting to {url} timed out", reason="connect_timeout") from exc
    except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
        raise RetryableError(f"no complete reply from {url} in time", reason="timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise OutageError(
            f"connection to {url} dropped mid-reply: {exc}", reason="dropped"
        ) from exc
    except aiohttp.ClientConnectionError as exc:
        raise OutageError(f"cannot reach {url}: {exc}", reason="unreachable") from exc
    except aiohttp.ContentTypeError as exc:
        raise RetryableError(f"unexpected reply from {url}: {exc}", reason="bad_response") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RetryableError(f"garbled reply from {url}: {exc}", reason="bad_response") from exc
    except asyncio.IncompleteReadError as exc:
        raise OutageError(f"connection to {url} dropped mid-reply", reason="dropped") from exc


# A prompt too long for this model's context is the job's fault, not the configuration's.
_JOB_SPECIFIC_RE = re.compile(
    r"context[ _]length|context window|maximum context|too many tokens|prompt is too long"
    r"|exceeds? (the )?(max|context)",
    re.IGNORECASE,
)
# A 500 whose body is the server's request validation (pydantic, as llama-cpp-python sends it).
_VALIDATION_RE = re.compile(
    r"validation error|Input should be|Field required|Extra inputs are not permitted",
    re.IGNORECASE,
)
# The server does not take our `response_format` (it names the field or the format type).
_FORMAT_RE = re.compile(
    r"response_format|json_schema|'text' or 'json_object'|guided_json|structured output",
    re.IGNORECASE,
)


def is_format_refusal(status: int, message: str) -> bool:
    """True when a 4xx/500 reply refuses the `response_format` we sent (try a simpler one)."""
    return (400 <= status < 500 or status == 500) and bool(_FORMAT_RE.search(message))


def error_for_status(status: int, message: str, model: str, url: str) -> GeneratorError:
    """The typed error for a non-200 reply.

    404 = model missing; 429/503 = busy (outage); a too-long prompt (400/413) is final for that
    job; any other 4xx, and a 500 whose body is a request-validation error, is the same for
    every job: a ConfigurationError that stops generation. Other 5xx are retried.
    """
    if status == 404:
        if "model" not in message.lower():  # Ollama and OpenAI-style servers name the model
            return WrongServerError(
                f"{url} answered 404 ({message[:120]}) and does not look like the configured"
                " generator API: check generator.url and generator.backend"
            )
        return ModelMissingError(
            f"model {model!r} not found on {url} ({message}); pull it first, e.g. "
            f"`ollama pull {model}`"
        )
    if status in (429, 503):
        return OutageError(f"{url} is busy ({status}): {message}", reason=f"http_{status}")
    if status == 413 or (400 <= status < 500 and _JOB_SPECIFIC_RE.search(message)):
        return FinalError(
            f"{url} rejected the request ({status}): {message}", reason=f"http_{status}"
        )
    if status in (408, 409):
        return RetryableError(f"{url} answered {status}: {message}", reason=f"http_{status}")
    if 400 <= status < 500 or (status == 500 and _VALIDATION_RE.search(message)):
        return ConfigurationError(
            f"{url} refuses doctune's requests ({status}): {message} — this is the same for "
            "every job, so generation stopped; fix [generator] (backend, model, url) and run "
            "again (`doctune requeue` brings back jobs that died of it)",
            reason=f"request_rejected:http_{status}",
        )
    if status >= 500:
        return RetryableError(f"{url} failed ({status}): {message}", reason=f"http_{status}")
    return RetryableError(f"{url} answered {status}: {message}", reason=f"http_{status}")


async def error_message(resp: aiohttp.ClientResponse) -> str:
    """The `error` text of an error reply (see `error_text`)."""
    return error_text(await resp.read())


def error_text(raw: bytes) -> str:
    """The `error` text of an error body (Ollama: {"error": str}; OpenAI: {"error": {...}})."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw[:300].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error if error is not None else body)[:500]
