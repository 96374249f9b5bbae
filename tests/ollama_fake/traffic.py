"""What every generation request goes through: the call log, slots, latency, seeded randomness."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ollama_fake.wire import Call, sha

if TYPE_CHECKING:
    from ollama_fake.server import FakeOllama


def record(fake: FakeOllama, path: str, model: str, prompt: str, stream: bool) -> Call:
    """Log a generation request as it arrives (and count it in flight until `leave`)."""
    prompt_sha = sha(prompt)
    found = re.search(fake.chunk_pattern, prompt, re.DOTALL) if prompt else None
    with fake.lock:
        fake.seen_prompts[prompt_sha] += 1
        fake.seen_sources[sha(fake.source_text(prompt))] += 1
        fake.requests_by_path[path] += 1
        call = Call(
            seq=len(fake.calls) + 1,
            endpoint=path,
            model=model,
            prompt_sha=prompt_sha,
            chunk_sha=sha(found.group(1).strip()) if found else None,
            stream=stream,
            started_at=time.time(),
        )
        fake.calls.append(call)
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
    log(fake, {"event": "start", **asdict(call)})
    return call


def leave(fake: FakeOllama) -> None:
    with fake.lock:
        fake.in_flight -= 1


def finish(
    fake: FakeOllama, call: Call, status: int, outcome: str, resp: web.Response
) -> web.Response:
    end(fake, call, status, outcome)
    return resp


def end(fake: FakeOllama, call: Call, status: int, outcome: str) -> None:
    call.finished_at, call.status, call.outcome = time.time(), status, outcome
    log(fake, {"event": "end", "seq": call.seq, "status": status, "outcome": outcome})


def log(fake: FakeOllama, event: dict[str, Any]) -> None:
    if fake.call_log is None:
        return
    with fake.lock, fake.call_log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(event) + "\n")


def seeded_rng(fake: FakeOllama, call: Call) -> random.Random:
    """The request's own random stream: seed, prompt, and how often that prompt came."""
    n = fake.seen_prompts[call.prompt_sha]
    return random.Random(f"{fake.seed}|{call.prompt_sha}|{n}")


def latency(fake: FakeOllama, rng: random.Random) -> float:
    return fake.latency_s + (rng.uniform(0, fake.jitter_s) if fake.jitter_s else 0.0)


async def hold(fake: FakeOllama, rng: random.Random) -> None:
    delay = latency(fake, rng)
    if delay > 0:
        await asyncio.sleep(delay)


async def maybe_load(fake: FakeOllama, model: str) -> float:
    if model in fake.loaded:
        return 0.0
    fake.loaded[model] = time.time()
    if fake.load_latency_s > 0:
        await asyncio.sleep(fake.load_latency_s)
    return fake.load_latency_s


async def acquire_slot(fake: FakeOllama) -> bool:
    """Wait for a free slot; False when the queue is full (→ 503)."""
    assert fake.slot_cond is not None
    async with fake.slot_cond:
        if fake.running >= fake.slots and fake.waiting >= fake.max_queue:
            return False
        fake.waiting += 1
        try:
            await fake.slot_cond.wait_for(lambda: fake.running < fake.slots)
        finally:
            fake.waiting -= 1
        fake.running += 1
        fake.max_running = max(fake.max_running, fake.running)
    return True


async def release_slot(fake: FakeOllama) -> None:
    assert fake.slot_cond is not None
    # shielded: a cancelled handler must still give its slot back
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(_release_now(fake))


async def _release_now(fake: FakeOllama) -> None:
    assert fake.slot_cond is not None
    async with fake.slot_cond:
        fake.running -= 1
        fake.slot_cond.notify_all()
