"""The embedded (llama.cpp) registry, and the Modelfile every registration leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_ship_register import Env, env, tiny_model  # noqa: F401 - fixtures

from pipeline.ship.embedded_registry import EmbeddedRegistry
from pipeline.ship.modelfile import VersionPrompt, parse_modelfile, render_modelfile
from pipeline.ship.register import RegistrationError, rollback
from state import registrations as store

pytestmark = pytest.mark.anyio
# Each registration exports a GGUF and starts a llama.cpp child for the smoke test.
slow = pytest.mark.slow


def _embedded(env: Env) -> EmbeddedRegistry:  # noqa: F811
    return EmbeddedRegistry.for_settings(env.settings)


@slow
async def test_llamacpp_backend_stores_the_version_and_switches_the_pointer(
    env: Env,  # noqa: F811
) -> None:
    await env.add_run("r1")
    settings = env.with_registry(backend="llamacpp")
    reg = await env.register("r1", settings)

    assert (reg.backend, reg.state, reg.mode) == ("llamacpp", "active", "gguf")
    registry = _embedded(env)
    current = registry.current()
    assert current is not None
    assert current.tag == "doctune:r1"
    assert current.gguf == registry.version_dir("doctune:r1") / "model.gguf"
    pointer = json.loads(registry.pointer.read_text())
    assert pointer["alias"] == "doctune:latest"
    assert pointer["run_id"] == "r1"
    assert env.fake.created == {}  # Ollama was never asked


@slow
async def test_auto_backend_uses_llamacpp_when_ollama_does_not_answer(
    env: Env,  # noqa: F811
) -> None:
    await env.add_run("r1")
    settings = env.with_registry(backend="auto", ollama_url="http://127.0.0.1:9")
    reg = await env.register("r1", settings)
    assert reg.backend == "llamacpp"
    assert _embedded(env).current() is not None


@slow
async def test_corrupt_gguf_keeps_the_previous_version_current_with_the_reason(
    env: Env,  # noqa: F811
) -> None:
    settings = env.with_registry(backend="llamacpp")
    await env.add_run("good")
    await env.register("good", settings)
    bad_dir = await env.add_run("bad")
    (bad_dir / "gguf").mkdir()
    (bad_dir / "gguf" / "model-f16.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # truncated

    with pytest.raises(RegistrationError, match="smoke test of doctune:bad"):
        await env.register("bad", settings)

    current = _embedded(env).current()
    assert current is not None
    assert current.tag == "doctune:good"
    bad = await store.registration_for_run(env.db, "bad", "doctune:bad")
    assert bad is not None
    assert bad.state == "failed"
    assert "smoke test" in (bad.error or "")
    assert not _embedded(env).version_dir("doctune:bad").exists()  # not a rollback target
    state, error = await env.run_state("bad")
    assert state == "failed"
    assert "registration failed" in (error or "")


@slow
async def test_rollback_repoints_and_skips_versions_whose_files_are_gone(
    env: Env,  # noqa: F811
) -> None:
    settings = env.with_registry(backend="llamacpp", keep_versions=3)
    for run_id in ("v1", "v2", "v3"):
        await env.add_run(run_id)
        await env.register(run_id, settings, force=True)
    registry = _embedded(env)
    (registry.version_dir("doctune:v2") / "model.gguf").unlink()  # lost by hand

    restored = await rollback(env.db, settings)

    assert restored.model_tag == "doctune:v1"
    current = registry.current()
    assert current is not None
    assert current.tag == "doctune:v1"
    v2 = await store.registration_for_run(env.db, "v2", "doctune:v2")
    assert v2 is not None
    assert v2.state == "deleted"


@slow
async def test_keep_versions_prunes_old_gguf_directories(env: Env) -> None:  # noqa: F811
    settings = env.with_registry(backend="llamacpp", keep_versions=1)
    for run_id in ("v1", "v2"):
        await env.add_run(run_id)
        await env.register(run_id, settings, force=True)
    registry = _embedded(env)
    assert not registry.version_dir("doctune:v1").exists()
    assert registry.version_dir("doctune:v2").is_dir()


@slow
async def test_modelfile_carries_exactly_the_template_and_stops_the_create_api_got(
    env: Env,  # noqa: F811
) -> None:
    run_dir = await env.add_run("r1")
    await env.register("r1")  # Ollama backend (the stand-in)

    body = env.fake.created["doctune:r1"]
    from_path, prompt = parse_modelfile((run_dir / "gguf" / "Modelfile").read_text())
    assert from_path == "./model-f16.gguf"
    assert prompt.template == body["template"]
    assert prompt.stop == body["parameters"]["stop"]


@slow
async def test_embedded_modelfile_matches_what_the_embedded_engine_renders(
    env: Env,  # noqa: F811
) -> None:
    await env.add_run("r1")
    await env.register("r1", env.with_registry(backend="llamacpp"))
    registry = _embedded(env)
    from_path, prompt = parse_modelfile(registry.modelfile_path("doctune:r1").read_text())
    current = registry.current()
    assert current is not None
    assert from_path == "./model.gguf"
    assert (prompt.template, prompt.stop) == (current.prompt.template, current.prompt.stop)


def test_modelfile_round_trips_multiline_templates_and_stops(tmp_path: Path) -> None:
    prompt = VersionPrompt("<|im_start|>{{ .System }}\n\n  {{ end }}", ["<|im_end|>", "</s>"])
    text = render_modelfile("./model.gguf", prompt, tag="doctune:x")
    assert parse_modelfile(text) == ("./model.gguf", prompt)
