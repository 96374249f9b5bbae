"""Registration against the Ollama stand-in: blobs, create body, smoke test, alias, rollback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import ship_models
from click.testing import CliRunner
from ollama_fake import FakeOllama

from pipeline import retrain
from pipeline.settings import PathsSettings, RegistrySettings, Settings
from pipeline.ship.register import GateRejected, RegistrationError, register_run, rollback
from pipeline.ship.template import build_ollama_prompt
from pipeline.train.runs import TrainingResult
from state import registrations as store
from state.db import Database, now, open_db

pytestmark = pytest.mark.anyio

GOOD_EVAL = {
    "base": {"answer_nll": 2.0},
    "tuned": {"answer_nll": 1.5},
    "holdout_nll_gain": 0.25,
    "general_ppl_drift": 0.01,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ship_models.tiny_smol_dir(tmp_path_factory)


@dataclasses.dataclass
class Env:
    settings: Settings
    db: Database
    fake: FakeOllama
    tiny_model: Path

    async def add_run(self, run_id: str, *, evaluation: dict[str, Any] | None = None) -> Path:
        """A finished training run: merged model, metrics.json, holdout, training_runs row."""
        run_dir = self.settings.paths.models_dir / "runs" / run_id
        shutil.copytree(
            self.tiny_model, run_dir / "merged", ignore=shutil.ignore_patterns(".built")
        )
        metrics = {
            "run_id": run_id,
            "eval": evaluation or GOOD_EVAL,
            "prompt": {"template_vars": {"date_string": "26 Jul 2024"}},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "dataset").mkdir()
        (run_dir / "dataset" / "holdout.jsonl").write_text(
            json.dumps({"question": "What is a TableProvider?", "answer": "A trait."}) + "\n"
        )
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO training_runs (id, trigger, state, requested_at, finished_at,"
                " n_train, n_holdout, live_pairs, run_dir, metrics_json)"
                " VALUES (?, 'manual', 'succeeded', ?, ?, 40, 4, 44, ?, ?)",
                (run_id, now(), now(), str(run_dir), json.dumps(metrics)),
            )
        return run_dir

    async def register(self, run_id: str, settings: Settings | None = None, **kw: Any) -> Any:
        """register_run with the served-version comparison stubbed out (it needs the training
        stack; tests that exercise it pass their own)."""
        kw.setdefault("served_nll", _far_worse)
        return await register_run(self.db, settings or self.settings, run_id, **kw)

    def with_registry(self, **changes: Any) -> Settings:
        return dataclasses.replace(
            self.settings, registry=dataclasses.replace(self.settings.registry, **changes)
        )

    async def run_state(self, run_id: str) -> tuple[str, str | None]:
        row = await self.db.fetchone(
            "SELECT state, error FROM training_runs WHERE id = ?", (run_id,)
        )
        assert row is not None
        return row["state"], row["error"]

    def alias_target(self) -> str | None:
        body = self.fake.created.get("doctune:latest")
        return None if body is None else str(body["model"])


async def _far_worse(model_dir: Path, run_dir: Path) -> float:
    return 100.0  # the served version scores far worse: the gate only checks the base


@pytest.fixture
async def env(tmp_path: Path, ollama_fake: FakeOllama, tiny_model: Path) -> AsyncIterator[Env]:
    settings = Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        registry=RegistrySettings(
            backend="ollama", ollama_url=ollama_fake.url, model_name="doctune", mode="gguf"
        ),
    )
    db = await open_db(settings.paths.db_path)
    try:
        yield Env(settings, db, ollama_fake, tiny_model)
    finally:
        await db.close()


async def test_register_uploads_gguf_creates_smoke_tests_and_moves_the_alias(env: Env) -> None:
    run_dir = await env.add_run("20261125T130000-aaaa")
    reg = await env.register("20261125T130000-aaaa")

    gguf = run_dir / "gguf" / "model-f16.gguf"
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    body = env.fake.created["doctune:20261125T130000-aaaa"]
    prompt = build_ollama_prompt(
        run_dir / "merged", bos_added_by_runtime=False, template_vars={"date_string": "26 Jul 2024"}
    )
    assert body["files"] == {"model.gguf": digest}
    assert body["template"] == prompt.template
    assert body["parameters"] == {"stop": ["<|im_end|>", "<|im_start|>"]}
    assert "quantize" not in body
    assert env.fake.blobs[digest].head[:4] == b"GGUF"
    assert env.alias_target() == "doctune:20261125T130000-aaaa"
    assert reg.state == "active"
    assert reg.model_tag == "doctune:20261125T130000-aaaa"
    assert await env.run_state("20261125T130000-aaaa") == ("registered", None)
    smoke = [c for c in env.fake.generation_calls() if c.model == "doctune:20261125T130000-aaaa"]
    assert len(smoke) == 1


async def test_blobs_already_on_the_server_are_not_uploaded_again(env: Env) -> None:
    await env.add_run("r1")
    await env.add_run("r2")  # same merged weights → same GGUF bytes → same digest
    await env.register("r1")
    await env.register("r2")
    digest = env.fake.created["doctune:r2"]["files"]["model.gguf"]
    assert env.fake.blob_uploads[digest] == 1
    assert env.alias_target() == "doctune:r2"


async def test_safetensors_mode_sends_weights_and_tokenizer_files_with_quantize(env: Env) -> None:
    run_dir = await env.add_run("st1")
    settings = env.with_registry(mode="safetensors", quantize="q4_K_M")
    reg = await env.register("st1", settings)
    body = env.fake.created["doctune:st1"]
    assert set(body["files"]) >= {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    for name, digest in body["files"].items():
        expected = hashlib.sha256((run_dir / "merged" / name).read_bytes()).hexdigest()
        assert digest == f"sha256:{expected}", name
    assert body["quantize"] == "q4_K_M"
    assert reg.mode == "safetensors"


async def test_a_failed_smoke_test_leaves_the_alias_on_the_previous_version(env: Env) -> None:
    await env.add_run("good")
    await env.add_run("mute")
    await env.register("good")
    env.fake.responder = lambda prompt, model: ""  # the new model answers nothing
    with pytest.raises(RegistrationError, match="smoke test"):
        await env.register("mute")
    assert env.alias_target() == "doctune:good"
    assert "doctune:mute" not in env.fake.models  # the broken version was removed
    state, error = await env.run_state("mute")
    assert state == "failed"
    assert error is not None
    assert "smoke test" in error
    regs = {r.model_tag: r.state for r in await store.list_registrations(env.db)}
    assert regs == {"doctune:good": "active", "doctune:mute": "failed"}


@pytest.mark.parametrize("failure", ["http_400", "http_500", "stream_error", "ollama_down"])
async def test_create_errors_and_outages_leave_the_alias_untouched(env: Env, failure: str) -> None:
    await env.add_run("old")
    await env.add_run("new")
    await env.register("old")
    settings = env.settings
    if failure == "http_400":
        settings = env.with_registry(quantize="q2_K")  # the server refuses this type
    elif failure == "http_500":
        env.fake.create_error = (500, "llama runner process has terminated")
    elif failure == "stream_error":
        env.fake.create_error = (200, "unsupported architecture")
    else:
        settings = env.with_registry(ollama_url="http://127.0.0.1:9")  # nothing listens
    with pytest.raises(RegistrationError):
        await env.register("new", settings)
    assert env.alias_target() == "doctune:old"
    assert (await env.run_state("new"))[0] == "failed"
    active = await store.active_registration(env.db, "doctune:latest")
    assert active is not None
    assert active.model_tag == "doctune:old"


async def test_a_server_older_than_the_create_api_is_named(env: Env) -> None:
    await env.add_run("r1")
    env.fake.version = "0.5.4"
    with pytest.raises(RegistrationError, match=r"Ollama 0\.5\.4 .* older than 0\.5\.5"):
        await env.register("r1")
    assert "doctune:r1" not in env.fake.models


async def test_registering_again_is_idempotent(env: Env) -> None:
    await env.add_run("r1")
    first = await env.register("r1")
    second = await env.register("r1")
    assert second.id == first.id
    assert second.state == "active"
    assert env.fake.requests_by_path["/api/create"] == 1
    assert len(await store.list_registrations(env.db)) == 1


async def test_cancellation_mid_create_leaves_the_alias_and_a_rerun_finishes(env: Env) -> None:
    await env.add_run("old")
    await env.add_run("new")
    await env.register("old")
    with anyio.CancelScope() as scope:
        await env.register("new", on_status=lambda _: scope.cancel())
    assert scope.cancelled_caught
    assert env.alias_target() == "doctune:old"
    interrupted = await store.registration_for_run(env.db, "new", "doctune:new")
    assert interrupted is not None
    assert (interrupted.state, interrupted.error) == ("failed", "interrupted")
    done = await env.register("new")
    assert done.id == interrupted.id
    assert env.alias_target() == "doctune:new"


async def test_only_the_last_k_versions_are_kept(env: Env) -> None:
    settings = env.with_registry(keep_versions=2)
    for run_id in ("a", "b", "c"):
        await env.add_run(run_id)
        await env.register(run_id, settings)
    states = {r.model_tag: r.state for r in await store.list_registrations(env.db)}
    assert states == {"doctune:a": "deleted", "doctune:b": "superseded", "doctune:c": "active"}
    assert "doctune:a" not in env.fake.models
    assert {"doctune:b", "doctune:c", "doctune:latest"} <= set(env.fake.models)


async def test_a_failed_prune_after_the_alias_moved_leaves_the_served_version_active(
    env: Env,
) -> None:
    settings = env.with_registry(keep_versions=1)
    await env.add_run("a")
    await env.register("a", settings)
    await env.add_run("b")
    env.fake.delete_error = (500, "disk I/O error")  # pruning "a" fails after the alias moved
    reg = await env.register("b", settings)
    assert reg.state == "active"
    assert reg.error is not None
    assert "pruning old versions failed" in reg.error
    assert env.alias_target() == "doctune:b"
    assert (await env.run_state("b"))[0] == "registered"
    states = {r.model_tag: r.state for r in await store.list_registrations(env.db)}
    assert states == {"doctune:a": "superseded", "doctune:b": "active"}


async def test_a_crashed_served_model_evaluation_is_recorded_not_escaping_retrain(
    env: Env,
) -> None:
    served_dir = await env.add_run("served")
    await env.register("served")
    run_dir = await env.add_run("next")
    # the served version's weights are broken: the real evaluation child crashes on them
    for weights in (served_dir / "merged").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    result = TrainingResult(
        run_id="next", state="succeeded", run_dir=run_dir, metrics=None, error=None,
        n_train=40, n_holdout=4, live_pairs=44,
    )  # fmt: skip
    outcome = await retrain._ship(env.db, env.settings, result)
    assert outcome.state == "failed"
    assert outcome.reason is not None
    assert "served-model evaluation failed" in outcome.reason
    state, error = await env.run_state("next")
    assert state == "failed"
    assert error is not None
    assert error.startswith("evaluation gate: served-model evaluation failed (exit 1)")
    assert env.alias_target() == "doctune:served"
    assert env.fake.requests_by_path["/api/create"] == 1  # only "served" was ever created


async def test_rollback_points_the_alias_at_the_previous_version(env: Env) -> None:
    for run_id in ("a", "b"):
        await env.add_run(run_id)
        await env.register(run_id)
    restored = await rollback(env.db, env.settings)
    assert restored.model_tag == "doctune:a"
    assert env.alias_target() == "doctune:a"
    states = {r.model_tag: r.state for r in await store.list_registrations(env.db)}
    assert states == {"doctune:a": "active", "doctune:b": "superseded"}
    with pytest.raises(RegistrationError, match="no earlier version"):
        await rollback(env.db, env.settings)
    assert env.alias_target() == "doctune:a"


async def test_the_gate_rejects_a_run_that_does_not_beat_the_base(env: Env) -> None:
    weak = {**GOOD_EVAL, "tuned": {"answer_nll": 1.99}, "holdout_nll_gain": 0.005}
    await env.add_run("weak", evaluation=weak)
    with pytest.raises(GateRejected, match=r"gain vs base 0\.50% < min_gain 2\.00%"):
        await env.register("weak")
    state, error = await env.run_state("weak")
    assert state == "rejected"
    assert error is not None
    assert '"tuned_nll": 1.99' in error
    assert env.fake.requests_by_path["/api/create"] == 0


async def test_the_gate_rejects_forgetting_beyond_max_drift(env: Env) -> None:
    await env.add_run("drifty", evaluation={**GOOD_EVAL, "general_ppl_drift": 0.3})
    with pytest.raises(GateRejected, match=r"drift 30\.00% > max_drift 10\.00%"):
        await env.register("drifty")


async def test_the_gate_compares_against_the_served_version(env: Env) -> None:
    await env.add_run("served")
    await env.register("served")
    await env.add_run("next")
    seen: list[tuple[Path, Path]] = []

    def served_nll(value: float) -> Callable[[Path, Path], Awaitable[float]]:
        async def fake_eval(model_dir: Path, run_dir: Path) -> float:
            seen.append((model_dir, run_dir))
            return value

        return fake_eval

    with pytest.raises(GateRejected, match="gain vs served"):
        await register_run(env.db, env.settings, "next", served_nll=served_nll(1.51))
    assert seen[0][0].parts[-2:] == ("served", "merged")
    assert seen[0][1].name == "next"
    reg = await register_run(env.db, env.settings, "next", served_nll=served_nll(1.8))
    assert reg.state == "active"
    assert env.alias_target() == "doctune:next"


async def test_register_and_rollback_commands(env: Env, tmp_path: Path) -> None:
    from daemon.cli import main

    for run_id in ("a", "b"):
        await env.add_run(run_id)
    config = tmp_path / "doctune.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{env.settings.paths.state_dir}"\n'
        f'models_dir = "{env.settings.paths.models_dir}"\n'
        f'[registry]\nollama_url = "{env.fake.url}"\n'
    )
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(main, ["--config", str(config), *args])

    result = await anyio.to_thread.run_sync(invoke, "register", "a")
    assert result.exit_code == 0, result.output
    assert "doctune:latest -> doctune:a" in result.output
    result = await anyio.to_thread.run_sync(invoke, "register", "b", "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["model_tag"] == "doctune:b"
    result = await anyio.to_thread.run_sync(invoke, "rollback")
    assert result.exit_code == 0, result.output
    assert "doctune:a" in result.output
    result = await anyio.to_thread.run_sync(invoke, "register", "nope")
    assert result.exit_code == 1
    assert "no training run 'nope'" in result.output
    result = await anyio.to_thread.run_sync(invoke, "registrations", "--json")
    assert [json.loads(line)["state"] for line in result.output.splitlines()] == [
        "active",
        "superseded",
    ]


async def test_status_shows_the_served_version_and_its_training(env: Env) -> None:
    from state.status import snapshot

    assert (await snapshot(env.db))["served_model"] is None
    await env.add_run("a")
    await env.register("a")
    served = (await snapshot(env.db))["served_model"]
    assert served["alias"] == "doctune:latest"
    assert served["model_tag"] == "doctune:a"
    assert served["run_id"] == "a"
    assert served["n_train"] == 40
    assert served["live_pairs"] == 44
    assert served["trained_at"] is not None
    assert served["versions_kept"] == 1
    json.dumps(served)  # JSON-able


def test_the_shipping_code_never_imports_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pipeline.retrain, pipeline.ship.register, pipeline.ship.gguf_export,"
        " pipeline.ship.template, daemon.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_server_versions_are_parsed_leniently() -> None:
    from pipeline.clients.ollama import parse_version

    assert parse_version("0.12.6") == (0, 12, 6)
    assert parse_version("v0.5.5-rc1") == (0, 5, 5)
    assert parse_version("dev") is None


async def test_smoke_test_sends_the_question_normalised_like_training(env: Env) -> None:
    run_dir = await env.add_run("20261125T130000-wwww")
    (run_dir / "dataset" / "holdout.jsonl").write_text(
        json.dumps({"question": "\n  What is a TableProvider?\u3000\r\n", "answer": "A trait."})
        + "\n"
    )
    await env.register("20261125T130000-wwww")
    (smoke,) = [c for c in env.fake.generation_calls() if c.model.endswith("-wwww")]
    # The stand-in hashes the message content it received.
    assert smoke.prompt_sha == hashlib.sha256(b"What is a TableProvider?").hexdigest()
