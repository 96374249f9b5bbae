"""The stand-in's own control routes (`/_fake/...`): stats, calls, knobs, outage."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from aiohttp import web

from ollama_fake.wire import err

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama


async def ctl_stats(fake: FakeOllama, request: web.Request) -> web.Response:
    return web.json_response(fake.stats())


async def ctl_calls(fake: FakeOllama, request: web.Request) -> web.Response:
    with fake.lock:
        return web.json_response([asdict(c) for c in fake.calls])


async def ctl_knobs(fake: FakeOllama, request: web.Request) -> web.Response:
    knobs = (
        "slots",
        "max_queue",
        "latency_s",
        "jitter_s",
        "load_latency_s",
        "rate_503",
        "rate_500",
        "rate_400",
        "rate_malformed",
        "rate_truncated",
        "rate_stream_error",
        "rate_bad_content",
        "avoid_asked",
        "seed",
    )
    if request.method == "POST":
        body = await request.json()
        for key, value in body.items():
            if key not in knobs:
                return err(400, f"unknown knob {key!r}")
            setattr(fake, key, value)
        if fake.slot_cond is not None:
            async with fake.slot_cond:
                fake.slot_cond.notify_all()
    return web.json_response({k: getattr(fake, k) for k in knobs})


async def ctl_outage(fake: FakeOllama, request: web.Request) -> web.Response:
    body = await request.json()
    await fake.aset_outage(bool(body.get("on")))
    return web.json_response({"outage": fake.outage})
