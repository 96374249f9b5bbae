"""The stand-in's records and HTTP helpers: calls, models, blobs, error bodies, streams."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

VERSION = "0.12.6"
QUANTIZE_TYPES = {"q4_K_M", "q4_K_S", "q8_0"}
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
# Ollama parses a string keep_alive with Go's time.ParseDuration
GO_DURATION = re.compile(r"[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+)")


@dataclass
class Call:
    """One generation request as the server saw it."""

    seq: int
    endpoint: str
    model: str
    prompt_sha: str
    chunk_sha: str | None
    stream: bool
    started_at: float
    finished_at: float | None = None
    status: int | None = None
    outcome: str = "pending"  # ok | busy_503 | error_500 | malformed | truncated | stream_error |
    #                          bad_content | model_missing | load | cancelled


@dataclass
class Model:
    name: str
    format: str = "gguf"
    family: str = "llama"
    quantization_level: str = "Q4_K_M"
    parameter_size: str = "3.2B"
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    size: int = 2_019_393_189
    modified_at: str = ""


@dataclass
class Blob:
    size: int
    head: bytes
    content: bytes | None  # kept when small (config files) so tests can inspect them


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def json_body(request: web.Request, *, openai: bool = False) -> Any:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return oai_err(400, "invalid JSON body") if openai else err(400, "invalid JSON body")
    if not isinstance(body, dict):
        return err(400, "body must be a JSON object")
    return body


def err(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def oai_err(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "api_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return web.json_response({"error": error}, status=status)


def final_fields(prompt: str, content: str, done_reason: str) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": done_reason,
        "prompt_eval_count": max(1, len(prompt.split()) * 4 // 3),
        "eval_count": max(1, len(content) // 4),
    }


def duration_fields(started: float, load_s: float) -> dict[str, int]:
    total_ns = int((time.perf_counter() - started) * 1e9)
    return {
        "total_duration": total_ns,
        "load_duration": int(load_s * 1e9),
        "prompt_eval_duration": total_ns // 10,
        "eval_duration": max(1, total_ns - total_ns // 10 - int(load_s * 1e9)),
    }


def pieces(text: str, n: int) -> list[str]:
    if not text:
        return [""]
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


async def status_stream(
    request: web.Request, statuses: list[str], stream: bool
) -> web.StreamResponse:
    if not stream:
        return web.json_response({"status": statuses[-1]})
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for status in statuses:
        await resp.write(json.dumps({"status": status}).encode() + b"\n")
    await resp.write_eof()
    return resp
