"""Register a trained run in Ollama: gate → files → blobs → create → smoke → alias → prune.

DESIGN invariant 7: the new version is created as `<name>:<run-id>`, smoke-tested, and only
then copied onto the alias `<name>:latest` (a single `/api/copy`), so a failure or a kill at
any point before that leaves the alias serving the previous model. Every step is safe to
repeat: blobs already on the server are skipped, an existing GGUF export is reused, and a
re-run of a registered run only re-checks and re-points the alias.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from pipeline.chat_content import normalize_message_content
from pipeline.settings import Settings
from pipeline.ship.gate import GateError, GateResult, ServedNll, child_served_nll, evaluate_gate
from pipeline.ship.registry import OllamaError, OllamaRegistry
from state import registrations as store
from state.db import Database
from state.registrations import Registration

__all__ = [
    "GateRejected",
    "RegistrationError",
    "alias_name",
    "model_tag",
    "register_run",
    "rollback",
]

log = structlog.get_logger(__name__)

SAFETENSORS_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SMOKE_QUESTION = "In one sentence, what is this documentation about?"
SMOKE_OPTIONS = {"temperature": 0, "seed": 0, "num_predict": 48}


class RegistrationError(RuntimeError):
    """Registration failed; the alias still serves the previous version."""


class GateRejected(RegistrationError):
    """The evaluation gate refused the run (recorded as `rejected`)."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.summary())
        self.result = result


def model_tag(settings: Settings, run_id: str) -> str:
    return f"{settings.registry.model_name}:{run_id}"


def alias_name(settings: Settings) -> str:
    return f"{settings.registry.model_name}:latest"


def _run_dir(settings: Settings, run: dict[str, Any]) -> Path:
    if run.get("run_dir"):
        return Path(run["run_dir"])
    return settings.paths.models_dir / "runs" / str(run["id"])


def _load_metrics(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    if run.get("metrics_json"):
        return dict(json.loads(run["metrics_json"]))
    raise RegistrationError(f"run {run['id']}: no metrics.json in {run_dir}")


async def _served_dir(db: Database, settings: Settings, run_id: str) -> Path | None:
    """The merged model directory of the version the alias serves now (None if none)."""
    active = await store.active_registration(db, alias_name(settings))
    if active is None or active.run_id is None or active.run_id == run_id:
        return None
    served = await store.run_for_registration(db, active.run_id)
    merged = _run_dir(settings, served or {"id": active.run_id}) / "merged"
    if not (merged / "config.json").is_file():
        log.warning("gate.served_model_missing", run_id=active.run_id, path=str(merged))
        return None
    return merged


def _stage_files(settings: Settings, run_dir: Path) -> dict[str, Path]:
    """name → local path of what Ollama imports (blocking: runs in a worker thread)."""
    merged = run_dir / "merged"
    if settings.registry.mode == "gguf":
        from pipeline.ship.gguf_export import export_gguf

        out = run_dir / "gguf" / "model-f16.gguf"
        if not out.is_file():  # the export is atomic: an existing file is complete
            export_gguf(merged, out, "f16")
        return {"model.gguf": out}
    files = {p.name: p for p in sorted(merged.glob("*.safetensors"))}
    index = merged / "model.safetensors.index.json"
    if index.is_file():
        files[index.name] = index
    for name in SAFETENSORS_FILES:
        if (merged / name).is_file():
            files[name] = merged / name
    return files


def _create_body(
    settings: Settings, tag: str, digests: dict[str, str], run_dir: Path, metrics: dict[str, Any]
) -> dict[str, Any]:
    from pipeline.ship.gguf_vocab import tokenizer_adds_bos
    from pipeline.ship.template import build_ollama_prompt

    merged = run_dir / "merged"
    template_vars = dict(metrics.get("prompt", {}).get("template_vars") or {})
    prompt = build_ollama_prompt(
        merged, bos_added_by_runtime=tokenizer_adds_bos(merged), template_vars=template_vars
    )
    body: dict[str, Any] = {
        "model": tag,
        "files": digests,
        "template": prompt.template,
        "parameters": {"stop": prompt.stop},
    }
    if settings.registry.quantize:
        body["quantize"] = settings.registry.quantize
    return body


async def _smoke_test(api: OllamaRegistry, tag: str, run_dir: Path) -> str:
    question = SMOKE_QUESTION
    holdout = run_dir / "dataset" / "holdout.jsonl"
    if holdout.is_file():
        for line in holdout.read_text(encoding="utf-8").splitlines():
            if line.strip():
                question = str(json.loads(line)["question"])
                break
    message = {"role": "user", "content": normalize_message_content(question)}
    reply = await api.chat(tag, [message], options=SMOKE_OPTIONS)
    content = str(reply.get("message", {}).get("content", ""))
    if not reply.get("done") or not content.strip():
        raise RegistrationError(f"smoke test of {tag}: empty or unfinished reply {reply!r:.300}")
    return content


async def _prune(api: OllamaRegistry, db: Database, settings: Settings) -> list[str]:
    """Delete versions beyond the newest `keep_versions` (never the active one)."""
    keep = max(1, settings.registry.keep_versions)
    kept = [
        r
        for r in await store.list_registrations(db, alias=alias_name(settings))
        if r.state in ("active", "superseded")
    ]
    kept.sort(key=lambda r: r.id, reverse=True)
    deleted = []
    for old in kept[keep:]:
        if old.state == "active":
            continue
        await api.delete(old.model_tag)  # False (404) is fine: already gone
        await store.mark_deleted(db, old.id)
        deleted.append(old.model_tag)
    return deleted


async def _prune_after_activate(
    api: OllamaRegistry, db: Database, settings: Settings, reg_id: int
) -> list[str]:
    """Prune old versions; a failure is recorded on the (served) registration, not raised."""
    try:
        return await _prune(api, db, settings)
    except (OllamaError, OSError) as exc:
        log.warning("register.prune_failed", error=str(exc))
        await store.note_error(db, reg_id, error=f"pruning old versions failed: {exc}"[:2000])
        return []


async def register_run(
    db: Database,
    settings: Settings,
    run_id: str,
    *,
    force: bool = False,
    served_nll: ServedNll = child_served_nll,
    on_status: Callable[[str], None] | None = None,
) -> Registration:
    """Gate, create `<name>:<run-id>`, smoke-test it, point the alias at it, prune old ones.

    Raises GateRejected (run marked `rejected`) or RegistrationError (registration and run
    marked `failed`); in both cases the alias is untouched.
    """
    run = await store.run_for_registration(db, run_id)
    if run is None:
        raise RegistrationError(f"no training run {run_id!r} (see `doctune runs`)")
    run_dir = _run_dir(settings, run)
    if not (run_dir / "merged" / "config.json").is_file():
        raise RegistrationError(f"run {run_id}: no merged model in {run_dir / 'merged'}")
    metrics = _load_metrics(run_dir, run)
    tag, alias = model_tag(settings, run_id), alias_name(settings)
    if not force and run["state"] != "registered":
        try:
            result = await evaluate_gate(
                metrics,
                run_dir,
                settings.registry,
                served_dir=await _served_dir(db, settings, run_id),
                served_nll=served_nll,
            )
        except (GateError, OSError) as exc:
            # the gate could not decide: the run says why; nothing was created, the alias stays
            log.error("register.gate_failed", run_id=run_id, error=str(exc))
            await store.mark_run_failed(db, run_id, error=f"evaluation gate: {exc}")
            raise RegistrationError(f"evaluation gate: {exc}") from exc
        log.info("register.gate", run_id=run_id, passed=result.passed, **result.numbers)
        if not result.passed:
            await store.mark_run_rejected(db, run_id, reason=result.summary())
            raise GateRejected(result)
    reg = await store.start_registration(
        db, run_id=run_id, model_tag=tag, alias=alias, mode=settings.registry.mode
    )
    # `reg` is a frozen copy of the row: once `activate` has run, this version is the one
    # served, and nothing that fails later (pruning old versions) may mark it failed.
    may_fail = reg.state == "creating"  # a kept version stays what it was
    try:
        async with OllamaRegistry(settings.registry.ollama_url) as api:
            await _publish(api, settings, tag, alias, run_dir, metrics, on_status)
            await store.activate(db, reg.id)
            may_fail = False
            deleted = await _prune_after_activate(api, db, settings, reg.id)
    except (OllamaError, RegistrationError, OSError, ValueError) as exc:
        log.error("register.failed", run_id=run_id, tag=tag, error=str(exc))
        if may_fail:
            with anyio.CancelScope(shield=True):
                await store.mark_failed(db, reg.id, error=str(exc)[:2000])
        raise RegistrationError(str(exc)) from exc
    except BaseException:
        # Cancelled or killed mid-way: the alias has not moved; say so in the row.
        if may_fail:
            with anyio.CancelScope(shield=True):
                await store.mark_failed(db, reg.id, error="interrupted", fail_run=False)
        raise
    log.info("register.done", run_id=run_id, tag=tag, alias=alias, pruned=deleted)
    final = await store.get_registration(db, reg.id)
    assert final is not None
    return final


async def _publish(
    api: OllamaRegistry,
    settings: Settings,
    tag: str,
    alias: str,
    run_dir: Path,
    metrics: dict[str, Any],
    on_status: Callable[[str], None] | None,
) -> None:
    server = await api.require_create_api()
    if await api.show(tag) is None:
        files = await anyio.to_thread.run_sync(_stage_files, settings, run_dir)
        digests = {}
        for name, path in files.items():
            digests[name], uploaded = await api.ensure_blob(path)
            log.info("register.blob", file=name, digest=digests[name], uploaded=uploaded)
        body = await anyio.to_thread.run_sync(
            _create_body, settings, tag, digests, run_dir, metrics
        )
        statuses = await api.create(body, on_status=on_status)
        log.info("register.created", tag=tag, server=server, statuses=len(statuses))
    try:
        await _smoke_test(api, tag, run_dir)
    except (OllamaError, RegistrationError):
        await api.delete(tag)  # a broken version must not linger as a rollback target
        raise
    await api.copy(tag, alias)  # the one step that changes what users get


async def rollback(db: Database, settings: Settings) -> Registration:
    """Point the alias back at the newest earlier version still present in Ollama."""
    alias = alias_name(settings)
    current = await store.active_registration(db, alias)
    if current is None:
        raise RegistrationError(f"nothing is registered under {alias}")
    older = [
        r
        for r in await store.list_registrations(db, alias=alias)
        if r.state == "superseded" and r.id < current.id
    ]
    async with OllamaRegistry(settings.registry.ollama_url) as api:
        for candidate in sorted(older, key=lambda r: r.id, reverse=True):
            if await api.show(candidate.model_tag) is None:
                await store.mark_deleted(db, candidate.id)  # gone from Ollama: not a target
                continue
            await api.copy(candidate.model_tag, alias)
            await store.roll_back(db, from_id=current.id, to_id=candidate.id)
            log.info("rollback.done", alias=alias, to=candidate.model_tag, was=current.model_tag)
            restored = await store.get_registration(db, candidate.id)
            assert restored is not None
            return restored
    raise RegistrationError(
        f"no earlier version of {alias} is kept (keep_versions={settings.registry.keep_versions})"
    )
