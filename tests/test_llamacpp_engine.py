"""The llama.cpp engine child: real llama-cpp-python server on the SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import aiohttp
import anyio
import pytest

from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import (
    LlamaServerError,
    LlamaServerSpec,
    check_gguf,
    default_gguf_path,
)
from pipeline.generate import backtranslate
from pipeline.generate.prompt import bounded_string, question_pattern, strict_object
from pipeline.generate.validate import Rejection
from pipeline.settings import GeneratorSettings

pytestmark = pytest.mark.anyio


def test_check_gguf_names_the_file_for_every_kind_of_bad_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LlamaServerError, match=r"nope\.gguf does not exist"):
        check_gguf(missing)
    with pytest.raises(LlamaServerError, match="is a directory"):
        check_gguf(tmp_path)
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(LlamaServerError, match=r"model\.gguf is not a GGUF file"):
        check_gguf(text)
    check_gguf(default_gguf_path())


async def test_a_gguf_that_fails_to_load_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    server = LlamaServer(LlamaServerSpec(broken, n_ctx=256, log_path=tmp_path / "engine.log"))
    with pytest.raises(LlamaServerError, match=r"broken\.gguf exited with code"):
        await server.start()
    assert not server.running


async def test_a_taken_port_is_refused_before_the_child_starts(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = LlamaServer(LlamaServerSpec(default_gguf_path(), port=port))
        with pytest.raises(LlamaServerError, match=f"port 127.0.0.1:{port} is already in use"):
            await server.start()


@pytest.mark.slow
async def test_engine_answers_schema_constrained_requests_and_is_restarted_after_a_crash(
    tmp_path: Path,
) -> None:
    spec = LlamaServerSpec(
        default_gguf_path(), n_ctx=512, model_alias="smollm2", log_path=tmp_path / "e.log"
    )
    schema = {
        "type": "object",
        "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 120}},
        "required": ["question"],
        "additionalProperties": False,
    }
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Ask one question about Apache Arrow."}],
        "max_tokens": 256,
        "temperature": 0,
        "response_format": {"type": "json_object", "schema": schema},
    }
    async with LlamaServer(spec) as server, aiohttp.ClientSession() as session:
        async with session.post(f"{server.base_url}/v1/chat/completions", json=body) as resp:
            reply = await resp.json()
        assert resp.status == 200
        assert reply["choices"][0]["finish_reason"] == "stop", reply
        # llama.cpp's JSON grammar lets raw control characters into strings: parse leniently.
        content = reply["choices"][0]["message"]["content"]
        assert set(json.loads(content, strict=False)) == {"question"}

        await _a_statement_cannot_satisfy_the_question_pattern(session, server.base_url)
        await _a_question_cannot_point_at_the_passage(session, server.base_url)

        first_pid = server.pid
        assert first_pid is not None
        seen: list[tuple[bool, str]] = []

        def on_change(s: LlamaServer) -> None:
            seen.append((s.running, s.last_error))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.supervise(on_change=on_change, poll_s=0.1))
            os.kill(first_pid, signal.SIGKILL)
            with anyio.fail_after(60):
                while not (server.restarts == 1 and await server.healthy()):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
        assert server.pid != first_pid
        assert seen[0][0] is False
        assert "exited with code -9" in seen[0][1]
        assert seen[-1] == (True, "")
        second_pid = server.pid
    assert second_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second_pid, 0)


async def _question(
    session: aiohttp.ClientSession, base_url: str, prompt: str, schema: dict[str, object]
) -> str:
    """SmolLM2's greedy reply to `prompt` under `schema`, parsed as one question."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 96,
        "temperature": 0,
        "response_format": {"type": "json_object", "schema": schema},
    }
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        reply = await resp.json()
    assert reply["choices"][0]["finish_reason"] == "stop", reply
    return backtranslate.parse_questions(reply["choices"][0]["message"]["content"], 1)[0]


async def _a_statement_cannot_satisfy_the_question_pattern(
    session: aiohttp.ClientSession, base_url: str
) -> None:
    """Asked to copy a statement, SmolLM2 copies it under the length-bounded schema (a reply
    the validator rejects); under `question_schema` the server's grammar makes it a question."""
    statement = "DataFusion is an extensible query engine written in Rust."
    prompt = f"Copy this sentence into the question field, word for word: {statement}"
    gen = GeneratorSettings()
    plain = strict_object({"question": bounded_string(10, 300)})
    patterned = backtranslate.question_schema(gen, 1)
    copied = await _question(session, base_url, prompt, plain)
    asked = await _question(session, base_url, prompt, patterned)
    with pytest.raises(Rejection, match="asks nothing"):
        backtranslate.check_question(copied, statement, gen)
    assert re.fullmatch(patterned["properties"]["question"]["pattern"], asked), asked


async def _a_question_cannot_point_at_the_passage(
    session: aiohttp.ClientSession, base_url: str
) -> None:
    """Asked to copy SmolLM2's most common rejected question, it copies it under the bt-v2
    pattern (rejected: it names nothing of its passage); under `question_schema` no word may
    start with "this", "these" or "passage", and the reply names something instead."""
    vague = "What is the purpose of this passage?"
    prompt = f"Copy this question into the question field, word for word: {vague}"
    gen = GeneratorSettings()
    unbanned = question_pattern(backtranslate.ASK_OPENERS, (), gen.max_question_chars)
    old = strict_object({"question": {**bounded_string(10, 300), "pattern": unbanned}})
    copied = await _question(session, base_url, prompt, old)
    asked = await _question(session, base_url, prompt, backtranslate.question_schema(gen, 1))
    assert copied == vague
    words = asked.lower().split()
    assert not any(w.startswith(backtranslate.POINTING_WORDS) for w in words), asked
