"""`doctune serve` / `ask` / `modelfile` on the embedded registry, with a tiny real GGUF."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import anyio
import pytest
import ship_models
from click.testing import CliRunner

from daemon.cli import main
from pipeline.settings import PathsSettings, RegistrySettings, ServeSettings, Settings
from pipeline.ship.backends import StagedVersion
from pipeline.ship.embedded_registry import EmbeddedRegistry
from pipeline.ship.modelfile import VersionPrompt
from pipeline.ship.serve import ModelServer, ServeError
from pipeline.ship.template import build_ollama_prompt
from state import registrations as store
from state.db import open_db

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VersionPrompt]:
    """A tiny random Llama (SmolLM2 tokenizer) exported to GGUF, with its prompt format."""
    from pipeline.ship.gguf_export import export_gguf

    model_dir = ship_models.tiny_smol_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("gguf") / "model-f16.gguf"
    export_gguf(model_dir, out, "f16")
    prompt = build_ollama_prompt(model_dir, bos_added_by_runtime=False)
    return out, VersionPrompt(prompt.template, prompt.stop)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        registry=RegistrySettings(backend="llamacpp"),
        serve=ServeSettings(port=_free_port(), poll_s=0.2, n_ctx=512, max_tokens=16),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _add_version(
    settings: Settings, tiny: tuple[Path, VersionPrompt], run_id: str, *, activate: bool = True
) -> EmbeddedRegistry:
    """Store `run_id` in the embedded registry (+ its registrations row) and point at it."""
    registry = EmbeddedRegistry.for_settings(settings)
    tag = f"doctune:{run_id}"
    staged = StagedVersion({"model.gguf": tiny[0]}, tiny[1], tiny[0].parent / "Modelfile")
    await registry.create_version(tag, staged, None)
    db = await open_db(settings.paths.db_path)
    try:
        async with db.write() as conn:
            await conn.execute(
                "INSERT INTO training_runs (id, trigger, state, requested_at) VALUES"
                " (?, 'manual', 'succeeded', 0)",
                (run_id,),
            )
        reg = await store.start_registration(
            db,
            run_id=run_id,
            model_tag=tag,
            alias="doctune:latest",
            mode="gguf",
            backend="llamacpp",
        )
        if activate:
            await registry.point_alias(tag, "doctune:latest")
            await store.activate(db, reg.id)
    finally:
        await db.close()
    return registry


async def _wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling state owned by another task
            await anyio.sleep(0.1)


@pytest.fixture
async def serving(settings: Settings) -> AsyncIterator[ModelServer]:
    server = ModelServer(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        yield server
        tg.cancel_scope.cancel()


async def _chat(url: str, *, stream: bool = False) -> tuple[int, dict | list]:
    body = {"messages": [{"role": "user", "content": "What is DataFusion?"}], "stream": stream}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/chat/completions", json=body) as resp,
    ):
        if not stream:
            return resp.status, await resp.json()
        events = []
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
        return resp.status, events


async def test_nothing_registered_answers_503_saying_how_to_train(
    serving: ModelServer,
) -> None:
    status, body = await _chat(serving.url)
    assert status == 503
    assert isinstance(body, dict)
    assert "doctune quickstart" in body["error"]["message"]


async def test_serve_on_a_taken_port_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.serve.port))
        taken.listen()
        with pytest.raises(ServeError, match=f"port 127.0.0.1:{settings.serve.port} is already"):
            await ModelServer(settings).serve()


@pytest.mark.slow
async def test_serve_switches_versions_without_dropping_a_request_in_flight(
    settings: Settings, tiny_gguf: tuple[Path, VersionPrompt]
) -> None:
    registry = await _add_version(settings, tiny_gguf, "v1")
    server = ModelServer(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        assert server.describe()["model"] == "doctune:v1"
        status, body = await _chat(server.url)
        assert status == 200
        assert isinstance(body, dict)
        assert body["model"] == "doctune:v1"
        assert body["choices"][0]["message"]["content"]

        # A request in flight on v1 while v2 is registered and switched to.
        old = server.active
        assert old is not None
        old.enter()
        await _add_version(settings, tiny_gguf, "v2")
        await _wait_until(lambda: server.describe()["model"] == "doctune:v2")
        assert old.server.running  # draining, not dropped
        status, events = await _chat(server.url, stream=True)
        assert status == 200
        assert isinstance(events, list)
        assert {e["model"] for e in events} == {"doctune:v2"}
        assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        registry_current = registry.current()
        assert registry_current is not None
        assert registry_current.tag == "doctune:v2"
        # The v1 request ends: only now is the old engine stopped.
        old.leave()
        await _wait_until(lambda: not old.server.running)
        tg.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_corrupt_new_version_leaves_the_previous_one_serving(
    settings: Settings, tiny_gguf: tuple[Path, VersionPrompt]
) -> None:
    registry = await _add_version(settings, tiny_gguf, "v1")
    server = ModelServer(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        await _add_version(settings, tiny_gguf, "v2", activate=False)
        gguf = registry.version_dir("doctune:v2") / "model.gguf"
        gguf.unlink()
        gguf.write_bytes(b"GGUF" + b"\0" * 64)  # passes the magic check, fails to load
        await registry.point_alias("doctune:v2", "doctune:latest")
        await _wait_until(lambda: bool(server.last_error))
        assert server.describe()["model"] == "doctune:v1"
        assert "doctune:v2 did not start" in (server.last_error or "")
        status, _ = await _chat(server.url)
        assert status == 200
        tg.cancel_scope.cancel()


def _cli(settings: Settings, tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "doctune.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{settings.paths.state_dir}"\n'
        f'models_dir = "{settings.paths.models_dir}"\n'
        f'[registry]\nbackend = "llamacpp"\n'
        f"[serve]\nport = {settings.serve.port}\nn_ctx = 512\n"
    )
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


async def test_ask_with_nothing_registered_says_how_to_train(
    settings: Settings, tmp_path: Path
) -> None:
    code, out = await anyio.to_thread.run_sync(_cli, settings, tmp_path, "ask", "What is it?")
    assert code == 1
    assert "no tuned model is registered yet" in out
    assert "doctune quickstart" in out


@pytest.mark.slow
async def test_ask_answers_from_the_current_version_and_modelfile_prints_it(
    settings: Settings, tiny_gguf: tuple[Path, VersionPrompt], tmp_path: Path
) -> None:
    await _add_version(settings, tiny_gguf, "v1")
    code, out = await anyio.to_thread.run_sync(_cli, settings, tmp_path, "ask", "What is it?")
    assert code == 0, out
    assert "doctune:v1" in out
    assert len(out.splitlines()) >= 2

    code, out = await anyio.to_thread.run_sync(_cli, settings, tmp_path, "modelfile")
    assert code == 0, out
    assert "FROM ./model.gguf" in out
    assert f'TEMPLATE """{tiny_gguf[1].template}"""' in out
