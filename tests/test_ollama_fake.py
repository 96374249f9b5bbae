"""The Ollama stand-in speaks the API shapes the other tests rely on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ollama_fake import FakeOllama

pytestmark = pytest.mark.anyio
TESTS_DIR = Path(__file__).resolve().parent

SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
CHUNK = (
    "DataFusion is an extensible query engine written in Rust. It uses Apache Arrow as its "
    "in-memory format. Users can register custom table providers to scan their own sources."
)
PROMPT = f"Write one pair.\n<<<BEGIN SOURCE>>>\n{CHUNK}\n<<<END SOURCE>>>\nJSON only."


def _chat_body(**extra: object) -> dict[str, object]:
    return {
        "model": "llama3.2:3b",
        "messages": [{"role": "user", "content": PROMPT}],
        "format": SCHEMA,
        "stream": False,
        **extra,
    }


async def test_chat_returns_schema_json_grounded_in_the_chunk(ollama_fake: FakeOllama) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{ollama_fake.url}/api/chat", json=_chat_body()) as resp,
    ):
        body = await resp.json()
    assert resp.status == 200
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["eval_count"] > 0
    assert body["prompt_eval_count"] > 0
    assert body["eval_duration"] > 0
    pair = json.loads(body["message"]["content"])
    assert set(pair) == {"question", "answer"}
    assert pair["answer"].split(".")[0] in CHUNK
    assert ollama_fake.calls_per_chunk()[hashlib.sha256(CHUNK.encode()).hexdigest()] == 1


async def test_streamed_chat_ends_with_a_done_line(ollama_fake: FakeOllama) -> None:
    lines = []
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{ollama_fake.url}/api/chat", json=_chat_body(stream=True)) as resp,
    ):
        async for raw in resp.content:
            lines.append(json.loads(raw))
    assert len(lines) > 2
    assert lines[-1]["done"] is True
    text = "".join(line["message"]["content"] for line in lines)
    assert json.loads(text)["question"].endswith("?")


async def test_stream_error_arrives_as_a_line_with_status_200(ollama_fake: FakeOllama) -> None:
    ollama_fake.rate_stream_error = 1.0
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{ollama_fake.url}/api/chat", json=_chat_body(stream=True)) as resp,
    ):
        lines = [json.loads(raw) async for raw in resp.content]
    assert resp.status == 200
    assert "error" in lines[-1]


async def test_unknown_model_is_404_and_prompt_less_generate_loads(
    ollama_fake: FakeOllama,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{ollama_fake.url}/api/chat", json=_chat_body(model="nope:1b")
        ) as resp:
            assert resp.status == 404
            assert "not found" in (await resp.json())["error"]
        async with http.post(
            f"{ollama_fake.url}/api/generate", json={"model": "llama3.2:3b"}
        ) as resp:
            assert (await resp.json())["done_reason"] == "load"
        async with http.get(f"{ollama_fake.url}/api/ps") as resp:
            assert [m["name"] for m in (await resp.json())["models"]] == ["llama3.2:3b"]


async def test_requests_beyond_the_slots_queue(ollama_fake: FakeOllama) -> None:
    ollama_fake.slots = 2
    ollama_fake.latency_s = 0.2

    async def one(http: aiohttp.ClientSession, i: int) -> int:
        body = _chat_body()
        body["messages"] = [{"role": "user", "content": PROMPT + str(i)}]
        async with http.post(f"{ollama_fake.url}/api/chat", json=body) as resp:
            return resp.status

    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(one(http, i) for i in range(6)))
    assert statuses == [200] * 6
    assert ollama_fake.max_running == 2
    assert ollama_fake.max_in_flight == 6


async def test_faults_are_deterministic_for_a_seed() -> None:
    outcomes = []
    for _ in range(2):
        fake = FakeOllama(seed=7).start()
        fake.rate_503, fake.rate_malformed, fake.rate_truncated = 0.2, 0.3, 0.1
        try:
            async with aiohttp.ClientSession() as http:
                for i in range(20):
                    body = _chat_body()
                    body["messages"] = [{"role": "user", "content": PROMPT + str(i)}]
                    async with http.post(f"{fake.url}/api/chat", json=body) as resp:
                        await resp.read()
            outcomes.append([c.outcome for c in fake.calls])
        finally:
            fake.stop()
    assert outcomes[0] == outcomes[1]
    assert {"busy_503", "malformed"} <= set(outcomes[0])


async def test_outage_refuses_connections_until_restored(ollama_fake: FakeOllama) -> None:
    await asyncio.to_thread(ollama_fake.set_outage, True)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{ollama_fake.url}/api/version"):
                pass
    await asyncio.to_thread(ollama_fake.set_outage, False)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{ollama_fake.url}/api/version") as resp,
    ):
        assert "version" in await resp.json()


async def test_blob_upload_checks_the_digest_and_create_needs_the_blob(
    ollama_fake: FakeOllama,
) -> None:
    data = b"GGUF" + b"\0" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = ollama_fake.url
    async with aiohttp.ClientSession() as http:
        async with http.head(f"{url}/api/blobs/{digest}") as resp:
            assert resp.status == 404
        async with http.post(f"{url}/api/blobs/{digest}", data=b"other") as resp:
            assert resp.status == 400
        create = {"model": "doctune:r1", "files": {"m.gguf": digest}, "quantize": "q8_0"}
        async with http.post(f"{url}/api/create", json=create) as resp:
            assert resp.status == 400
        async with http.post(f"{url}/api/blobs/{digest}", data=data) as resp:
            assert resp.status == 201
        async with http.head(f"{url}/api/blobs/{digest}") as resp:
            assert resp.status == 200
        create["template"] = "{{ .Prompt }}"
        create["parameters"] = {"stop": ["<|eot_id|>"]}
        async with http.post(f"{url}/api/create", json=create) as resp:
            statuses = [json.loads(raw)["status"] async for raw in resp.content]
        assert statuses[-1] == "success"
        async with http.post(
            f"{url}/api/copy", json={"source": "doctune:r1", "destination": "doctune"}
        ) as resp:
            assert resp.status == 200
        async with http.post(f"{url}/api/show", json={"model": "doctune:latest"}) as resp:
            shown = await resp.json()
        assert "<|eot_id|>" in shown["parameters"]
        async with http.delete(f"{url}/api/delete", json={"model": "doctune:r1"}) as resp:
            assert resp.status == 200
        async with http.get(f"{url}/api/tags") as resp:
            names = {m["name"] for m in (await resp.json())["models"]}
    assert "doctune:latest" in names
    assert "doctune:r1" not in names
    assert ollama_fake.created["doctune:r1"]["quantize"] == "q8_0"


async def test_openai_endpoint_honours_json_schema_response_format(
    ollama_fake: FakeOllama,
) -> None:
    body = {
        "model": "llama3.2:3b",
        "messages": [{"role": "user", "content": PROMPT}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{ollama_fake.url}/v1/chat/completions", json=body) as resp,
    ):
        reply = await resp.json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert set(json.loads(choice["message"]["content"])) == {"question", "answer"}
    assert reply["usage"]["completion_tokens"] > 0


async def test_in_loop_mode_serves_in_the_callers_loop() -> None:
    async with (
        FakeOllama().serving() as fake,
        aiohttp.ClientSession() as http,
        http.get(f"{fake.url}/api/version") as resp,
    ):
        assert resp.status == 200


def _get_json(url: str, body: dict[str, object] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(url, data=data, timeout=30) as resp:  # POST when data is set
        return json.loads(resp.read())


def test_runs_as_its_own_process_with_a_control_port() -> None:
    """`python -m ollama_fake` (how bench/bench_generate.py launches it) serves and obeys knobs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_fake", "--slots", "3", "--latency-s", "0"],
        cwd=TESTS_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        reply = _get_json(f"{urls['url']}/api/chat", _chat_body())
        assert json.loads(reply["message"]["content"])["answer"] in CHUNK
        assert _get_json(f"{urls['control_url']}/_fake/knobs")["slots"] == 3
        stats = _get_json(f"{urls['control_url']}/_fake/stats")
        assert stats["requests_by_path"] == {"/api/chat": 1}
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
