"""Register a trained run: gate → files + Modelfile → create → smoke → alias → prune.

DESIGN invariant 8: the new version is created as `<name>:<run-id>`, smoke-tested, and only
then the alias `<name>:latest` is pointed at it (one `/api/copy` in Ollama, one `os.replace`
of the pointer file in the embedded registry), so a failure or a kill at
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

from pipeline.clients.ollama import OllamaError
from pipeline.settings import Settings
from pipeline.ship.backends import (
    BackendName,
    RegistrationError,
    RegistryBackend,
)
from pipeline.ship.choose_backend import open_backend
from pipeline.ship.embedded_registry import RegistryPointerError
from pipeline.ship.gate import GateError, GateResult, ServedNll, child_served_nll, evaluate_gate
from pipeline.ship.modelfile import ModelfileError
from pipeline.ship.stage import smoke_question, stage_version
from pipeline.ship.template import TemplateError
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


async def _prune(backend: RegistryBackend, db: Database, settings: Settings) -> list[str]:
    """Delete versions beyond the newest `keep_versions` (never the active one)."""
    keep = max(1, settings.registry.keep_versions)
    kept = [
        r
        for r in await store.list_registrations(db, alias=alias_name(settings))
        if r.state in ("active", "superseded") and r.backend == backend.name
    ]
    kept.sort(key=lambda r: r.id, reverse=True)
    deleted = []
    for old in kept[keep:]:
        if old.state == "active":
            continue
        await backend.delete_version(old.model_tag)  # False (404) is fine: already gone
        await store.mark_deleted(db, old.id)
        deleted.append(old.model_tag)
    return deleted


async def _prune_after_activate(
    backend: RegistryBackend, db: Database, settings: Settings, reg_id: int
) -> list[str]:
    """Prune old versions; a failure is recorded on the (served) registration, not raised."""
    try:
        return await _prune(backend, db, settings)
    except (OllamaError, RegistrationError, OSError) as exc:
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
    backend: BackendName | None = None,
) -> Registration:
    """Gate, create `<name>:<run-id>`, smoke-test it, point the alias at it, prune old ones.

    `backend` defaults to `registry.backend` ("auto": Ollama when it answers, else the
    embedded llama.cpp registry). Raises GateRejected (run marked `rejected`) or
    RegistrationError (registration and run marked `failed`); in both cases the alias is
    untouched.
    """
    run_dir, metrics, registered = await _load_run(db, settings, run_id)
    if not force and not registered:
        await _pass_gate(db, settings, run_id, run_dir, metrics, served_nll)
    async with open_backend(settings, backend) as store_backend:
        reg, deleted = await _register_version(
            db, settings, store_backend, run_id, run_dir, metrics, on_status
        )
    log.info(
        "register.done",
        run_id=run_id,
        tag=reg.model_tag,
        alias=reg.alias,
        backend=reg.backend,
        pruned=deleted,
    )
    final = await store.get_registration(db, reg.id)
    assert final is not None
    return final


async def _load_run(
    db: Database, settings: Settings, run_id: str
) -> tuple[Path, dict[str, Any], bool]:
    """(run dir, metrics, already registered); RegistrationError for an unknown or unmerged run."""
    run = await store.run_for_registration(db, run_id)
    if run is None:
        raise RegistrationError(f"no training run {run_id!r} (see `doctune runs`)")
    run_dir = _run_dir(settings, run)
    if not (run_dir / "merged" / "config.json").is_file():
        raise RegistrationError(f"run {run_id}: no merged model in {run_dir / 'merged'}")
    return run_dir, _load_metrics(run_dir, run), run["state"] == "registered"


async def _pass_gate(
    db: Database,
    settings: Settings,
    run_id: str,
    run_dir: Path,
    metrics: dict[str, Any],
    served_nll: ServedNll,
) -> None:
    """Raise GateRejected (run marked `rejected`) unless the run beats base and served."""
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


async def _register_version(
    db: Database,
    settings: Settings,
    backend: RegistryBackend,
    run_id: str,
    run_dir: Path,
    metrics: dict[str, Any],
    on_status: Callable[[str], None] | None,
) -> tuple[Registration, list[str]]:
    """Record, publish and activate the version, prune old ones: (registration, pruned tags).

    A failure before activation marks the registration failed (RegistrationError); once
    `activate` has run, this version is the one served and nothing later may mark it failed.
    """
    tag, alias = model_tag(settings, run_id), alias_name(settings)
    mode = "gguf" if backend.name == "llamacpp" else settings.registry.mode
    reg = await store.start_registration(
        db, run_id=run_id, model_tag=tag, alias=alias, mode=mode, backend=backend.name
    )
    may_fail = reg.state == "creating"  # a kept version stays what it was
    try:
        await _publish(backend, settings, tag, alias, run_dir, metrics, on_status)
        await store.activate(db, reg.id)
        may_fail = False
        deleted = await _prune_after_activate(backend, db, settings, reg.id)
    except _FAILURES as exc:
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
    return reg, deleted


_FAILURES = (
    OllamaError,
    RegistrationError,
    RegistryPointerError,
    TemplateError,
    ModelfileError,
    OSError,
    ValueError,
)


async def _publish(
    backend: RegistryBackend,
    settings: Settings,
    tag: str,
    alias: str,
    run_dir: Path,
    metrics: dict[str, Any],
    on_status: Callable[[str], None] | None,
) -> None:
    if not await backend.has_version(tag):
        staged = await anyio.to_thread.run_sync(
            stage_version, settings, run_dir, metrics, tag, backend.name
        )
        await backend.create_version(tag, staged, on_status)
    try:
        await backend.smoke_test(tag, smoke_question(run_dir))
    except _FAILURES:
        await backend.delete_version(tag)  # a broken version must not linger as a target
        raise
    await backend.point_alias(tag, alias)  # the one step that changes what users get


async def rollback(db: Database, settings: Settings) -> Registration:
    """Point the alias back at the newest earlier version still present in its registry."""
    alias = alias_name(settings)
    current = await store.active_registration(db, alias)
    if current is None:
        raise RegistrationError(f"nothing is registered under {alias}")
    older = [
        r
        for r in await store.list_registrations(db, alias=alias)
        if r.state == "superseded" and r.id < current.id and r.backend == current.backend
    ]
    async with open_backend(settings, current.backend) as backend:  # type: ignore[arg-type]
        for candidate in sorted(older, key=lambda r: r.id, reverse=True):
            if not await backend.has_version(candidate.model_tag):
                await store.mark_deleted(db, candidate.id)  # gone (or corrupt): not a target
                continue
            await backend.point_alias(candidate.model_tag, alias)
            await store.roll_back(db, from_id=current.id, to_id=candidate.id)
            log.info("rollback.done", alias=alias, to=candidate.model_tag, was=current.model_tag)
            restored = await store.get_registration(db, candidate.id)
            assert restored is not None
            return restored
    raise RegistrationError(
        f"no earlier version of {alias} is kept (keep_versions={settings.registry.keep_versions})"
    )
