"""A loopback proxy that records real OpenAI-compatible exchanges into a transcript.

The slow contract test puts it between doctune and a real llama.cpp server; what it records
(tests/fixtures/llamacpp/*.jsonl) is replayed by the stand-in in the fast tests
(`FakeOllama.transcript`), so the stand-in answers what the real server answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["RecordingProxy", "exchange_key", "load_transcript"]


def exchange_key(body: dict[str, Any]) -> str:
    """What identifies a request for replay: the messages and the response format."""
    wanted = {"messages": body.get("messages"), "response_format": body.get("response_format")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def load_transcript(path: Path) -> dict[str, dict[str, Any]]:
    """{exchange_key: {"status", "response"}} from a recorded JSONL transcript."""
    replies: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            replies[exchange_key(record["request"])] = record
    return replies


class RecordingProxy:
    """Forwards `/v1/*` to `upstream`; keeps every chat exchange in `exchanges`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[dict[str, Any]] = []
        self.url = ""

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[RecordingProxy]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            self._session = session
            try:
                yield self
            finally:
                await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        raw = await request.read()
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=raw or None,
            headers={"Content-Type": "application/json"} if raw else None,
        ) as upstream:
            status, payload = upstream.status, await upstream.read()
        if request.path == "/v1/chat/completions":
            self.exchanges.append(
                {
                    "request": json.loads(raw),
                    "status": status,
                    "response": json.loads(payload),
                }
            )
        return web.Response(status=status, body=payload, content_type="application/json")

    def save(self, path: Path) -> None:
        """Write the transcript (one exchange per line), volatile fields left as recorded."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in self.exchanges]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
