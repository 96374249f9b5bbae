"""Ollama's native generation routes: `POST /api/chat` and `POST /api/generate`.

Streamed NDJSON (default) or `"stream": false`; a prompt-less request loads the model
(`done_reason: "load"`), with `keep_alive: 0` unloads it; the final object carries Ollama's
counts and durations (ns).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ollama_fake import replies, traffic
from ollama_fake.wire import (
    BUSY_MESSAGE,
    GO_DURATION,
    Call,
    duration_fields,
    err,
    final_fields,
    full_name,
    json_body,
    now_iso,
    pieces,
)

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama


async def chat(fake: FakeOllama, request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    messages = body.get("messages") or []
    prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return await _ollama_generation(fake, request, body, prompt, chat=True)


async def generate(fake: FakeOllama, request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    prompt = str(body.get("system") or "") + "\n" + str(body.get("prompt") or "")
    if not body.get("prompt"):
        prompt = ""
    return await _ollama_generation(fake, request, body, prompt, chat=False)


async def _ollama_generation(
    fake: FakeOllama, request: web.Request, body: dict[str, Any], prompt: str, *, chat: bool
) -> web.StreamResponse:
    model = full_name(str(body.get("model") or ""))
    stream = body.get("stream", True) is not False
    call = traffic.record(fake, request.path, model, prompt, stream)
    try:
        if not body.get("model"):
            return traffic.finish(fake, call, 400, "bad_request", err(400, "model is required"))
        keep_alive = body.get("keep_alive")
        if isinstance(keep_alive, str) and not GO_DURATION.fullmatch(keep_alive):
            # Ollama parses a string keep_alive with Go's time.ParseDuration
            msg = f'time: missing unit in duration "{keep_alive}"'
            return traffic.finish(fake, call, 400, "bad_request", err(400, msg))
        if model not in fake.models:
            msg = f'model "{body.get("model")}" not found, try pulling it first'
            return traffic.finish(fake, call, 404, "model_missing", err(404, msg))
        if not prompt.strip():
            return await _load_or_unload(fake, call, body, model, chat=chat)
        return await _generate_reply(fake, request, call, body, model, prompt, stream, chat)
    except asyncio.CancelledError:
        traffic.end(fake, call, 499, "cancelled")
        raise
    finally:
        traffic.leave(fake)


async def _load_or_unload(
    fake: FakeOllama, call: Call, body: dict[str, Any], model: str, *, chat: bool
) -> web.Response:
    unload = body.get("keep_alive") in (0, "0", "0s")
    load_ns = 0
    if unload:
        fake.loaded.pop(model, None)
    elif model not in fake.loaded:
        load_ns = int(fake.load_latency_s * 1e9)
        await asyncio.sleep(fake.load_latency_s)
        fake.loaded[model] = time.time()
    reply: dict[str, Any] = {"model": body.get("model"), "created_at": now_iso()}
    if chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    reply.update(done=True, done_reason="unload" if unload else "load")
    if load_ns:
        reply["load_duration"] = load_ns
    return traffic.finish(fake, call, 200, "load", web.json_response(reply))


async def _generate_reply(
    fake: FakeOllama,
    request: web.Request,
    call: Call,
    body: dict[str, Any],
    model: str,
    prompt: str,
    stream: bool,
    chat: bool,
) -> web.StreamResponse:
    rng = traffic.seeded_rng(fake, call)
    if rng.random() < fake.rate_503:
        return traffic.finish(fake, call, 503, "busy_503", err(503, BUSY_MESSAGE))
    if fake.rate_400 and rng.random() < fake.rate_400:
        msg = "invalid options: num_ctx must be a positive integer"
        return traffic.finish(fake, call, 400, "bad_request", err(400, msg))
    if not await traffic.acquire_slot(fake):
        return traffic.finish(fake, call, 503, "busy_503", err(503, BUSY_MESSAGE))
    try:
        started = time.perf_counter()
        load_s = await traffic.maybe_load(fake, model)
        content, outcome, done_reason = replies.content(
            fake, prompt, body.get("format"), rng, model
        )
        if outcome == "ok" and rng.random() < fake.rate_500:
            await traffic.hold(fake, rng)
            msg = "an error was encountered while running the model: unexpected EOF"
            return traffic.finish(fake, call, 500, "error_500", err(500, msg))
        stream_error = rng.random() < fake.rate_stream_error and outcome == "ok"
        if stream_error and not stream:
            await traffic.hold(fake, rng)
            return traffic.finish(fake, call, 500, "stream_error", err(500, "llama runner crashed"))
        final = final_fields(prompt, content, done_reason)
        if not stream:
            await traffic.hold(fake, rng)
            final.update(duration_fields(started, load_s))
            reply = {"model": body.get("model"), "created_at": now_iso()}
            if chat:
                reply["message"] = {"role": "assistant", "content": content}
            else:
                reply["response"] = content
            reply.update(final)
            return traffic.finish(fake, call, 200, outcome, web.json_response(reply))
        return await _stream_ollama(
            fake, request, call, body, content, final, rng, chat, stream_error, outcome
        )
    finally:
        await traffic.release_slot(fake)


async def _stream_ollama(
    fake: FakeOllama,
    request: web.Request,
    call: Call,
    body: dict[str, Any],
    content: str,
    final: dict[str, Any],
    rng: random.Random,
    chat: bool,
    stream_error: bool,
    outcome: str,
) -> web.StreamResponse:
    started = time.perf_counter()
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    parts = pieces(content, 8)
    delay_s = traffic.latency(fake, rng) / max(1, len(parts))
    for i, piece in enumerate(parts):
        await asyncio.sleep(delay_s)
        if stream_error and i >= len(parts) // 2:
            err = "an error was encountered while running the model: unexpected EOF"
            await resp.write(json.dumps({"error": err}).encode() + b"\n")
            await resp.write_eof()
            traffic.end(fake, call, 200, "stream_error")
            return resp
        line: dict[str, Any] = {"model": body.get("model"), "created_at": now_iso()}
        if chat:
            line["message"] = {"role": "assistant", "content": piece}
        else:
            line["response"] = piece
        line["done"] = False
        await resp.write(json.dumps(line).encode() + b"\n")
    last: dict[str, Any] = {"model": body.get("model"), "created_at": now_iso()}
    if chat:
        last["message"] = {"role": "assistant", "content": ""}
    else:
        last["response"] = ""
    final.update(duration_fields(started, 0.0))
    last.update(final)
    await resp.write(json.dumps(last).encode() + b"\n")
    await resp.write_eof()
    traffic.end(fake, call, 200, outcome)
    return resp
