"""The OpenAI-compatible routes: `POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models`.

`response_format` `json_schema` or `json_object` (+ `schema`, as llama-cpp-python) is honoured;
`openai_flavor` refuses formats as real servers do (faults.format_refusal); with `transcript`
set, only recorded real replies are answered (tests/recording_proxy.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ollama_fake import replies, traffic
from ollama_fake.faults import format_refusal
from ollama_fake.wire import BUSY_MESSAGE, Call, full_name, json_body, oai_err, pieces

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama


async def openai_chat(fake: FakeOllama, request: web.Request) -> web.StreamResponse:
    body = await json_body(request, openai=True)
    if isinstance(body, web.Response):
        return body
    messages = body.get("messages") or []
    prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    model = full_name(str(body.get("model") or ""))
    stream = bool(body.get("stream", False))
    call = traffic.record(fake, request.path, model, prompt, stream)
    try:
        return await _openai_reply(fake, request, call, body, model, prompt, stream)
    except asyncio.CancelledError:
        traffic.end(fake, call, 499, "cancelled")
        raise
    finally:
        traffic.leave(fake)


async def _openai_reply(
    fake: FakeOllama,
    request: web.Request,
    call: Call,
    body: dict[str, Any],
    model: str,
    prompt: str,
    stream: bool,
) -> web.StreamResponse:
    if fake.transcript is not None:
        return _replay(fake, call, body)
    if model not in fake.models:
        msg = f'model "{body.get("model")}" not found, try pulling it first'
        return traffic.finish(fake, call, 404, "model_missing", oai_err(404, msg))
    refusal = format_refusal(fake.openai_flavor, body.get("response_format"))
    if refusal is not None:
        return traffic.finish(fake, call, refusal[0], "format_refused", refusal[1])
    if not prompt.strip():
        return traffic.finish(fake, call, 400, "bad_request", oai_err(400, "messages is empty"))
    rng = traffic.seeded_rng(fake, call)
    if rng.random() < fake.rate_503 or not await traffic.acquire_slot(fake):
        return traffic.finish(fake, call, 503, "busy_503", oai_err(503, BUSY_MESSAGE))
    try:
        load_s = await traffic.maybe_load(fake, model)
        fmt = _openai_format(body.get("response_format"))
        content, outcome, done_reason = replies.content(fake, prompt, fmt, rng, model)
        await traffic.hold(fake, rng)
        if outcome == "ok" and rng.random() < fake.rate_500:
            return traffic.finish(fake, call, 500, "error_500", oai_err(500, "model runner failed"))
        finish = "length" if done_reason == "length" else "stop"
        usage = _usage(prompt, content)
        head = {"id": f"chatcmpl-{call.seq}", "model": body.get("model")}
        if not stream:
            reply = {
                **head,
                "object": "chat.completion",
                "created": int(time.time()),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "x_load_s": load_s,
            }
            return traffic.finish(fake, call, 200, outcome, web.json_response(reply))
        resp = await _stream_sse(request, head, content, finish, usage)
        traffic.end(fake, call, 200, outcome)
        return resp
    finally:
        await traffic.release_slot(fake)


def _usage(prompt: str, content: str) -> dict[str, int]:
    usage = {
        "prompt_tokens": max(1, len(prompt.split()) * 4 // 3),
        "completion_tokens": max(1, len(content) // 4),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


async def _stream_sse(
    request: web.Request,
    head: dict[str, Any],
    content: str,
    finish: str,
    usage: dict[str, int],
) -> web.StreamResponse:
    """The reply as server-sent events: content pieces, a tail with the usage, `[DONE]`."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for piece in pieces(content, 8):
        chunk = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    tail = {
        **head,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        "usage": usage,
    }
    await resp.write(f"data: {json.dumps(tail)}\n\ndata: [DONE]\n\n".encode())
    await resp.write_eof()
    return resp


def _replay(fake: FakeOllama, call: Call, body: dict[str, Any]) -> web.Response:
    from recording_proxy import exchange_key

    assert fake.transcript is not None
    record = fake.transcript.get(exchange_key(body))
    if record is None:
        resp = oai_err(500, "no recorded reply for this request")
        return traffic.finish(fake, call, 500, "unrecorded", resp)
    resp = web.json_response(record["response"], status=record["status"])
    return traffic.finish(fake, call, record["status"], "replayed", resp)


async def openai_models(fake: FakeOllama, request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "owned_by": "library"} for m in fake.models]
    return web.json_response({"object": "list", "data": data})


def _openai_format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    if response_format.get("type") == "json_object":
        schema = response_format.get("schema")  # llama-cpp-python: json_object + schema
        return schema if isinstance(schema, dict) else "json"
    return None
