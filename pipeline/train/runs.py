"""Training runs: lock the runs folder, snapshot the pairs, run the recipe child, record it.

queued (row written, dataset snapshot) → running (child started) → succeeded (the child
renamed `<id>.tmp` to `<id>`) or failed (non-zero exit, killed — e.g. OOM —, timeout or
cancellation; the stderr tail is stored). Cancelling the caller kills the child's whole
process group (`pipeline.child_process`), so a stopping daemon never leaves a trainer behind.
"""

from __future__ import annotations

import fcntl
import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog

from pipeline.child_process import ChildProcess, EventFn
from pipeline.evaluation.sets import snapshot_sets
from pipeline.settings import Settings
from pipeline.train import launch
from pipeline.train.base_model import resolve_base_model
from pipeline.train.dataset import SnapshotSummary, validation_as_holdout, write_snapshot
from pipeline.train.spec import spec_from_settings
from state import training as store
from state.db import Database

__all__ = ["ProgressFn", "TrainingBusyError", "TrainingResult", "new_run_id", "run_training"]

log = structlog.get_logger(__name__)

ProgressFn = EventFn
_LOCK_NAME = ".train.lock"


class TrainingBusyError(RuntimeError):
    """Another process (daemon or `doctune train`) is training into the same models_dir."""


@dataclass(frozen=True)
class TrainingResult:
    """The outcome of one run (the DB row says the same)."""

    run_id: str
    state: Literal["succeeded", "failed"]
    run_dir: Path | None
    metrics: dict[str, Any] | None
    error: str | None
    n_train: int
    n_holdout: int
    live_pairs: int


def new_run_id() -> str:
    """Sortable, unique: `20261125T130102-3fa2` (UTC)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


async def run_training(
    db: Database,
    settings: Settings,
    *,
    trigger: str,
    progress: ProgressFn | None = None,
) -> TrainingResult:
    """Snapshot live pairs, run the recipe child, record the outcome. Raises only
    TrainingBusyError (nothing recorded) and cancellation (run recorded as failed)."""
    runs_dir = settings.paths.models_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = _try_lock(runs_dir / _LOCK_NAME)
    try:
        # We hold the lock, so nobody else is training: leftovers are from a dead process.
        stale = await store.fail_stale_runs(db, reason="interrupted: the training process died")
        if stale:
            log.warning("training.stale_runs_failed", count=stale)
        _prune_failed_dirs(runs_dir)
        return await _run_locked(db, settings, runs_dir, trigger=trigger, progress=progress)
    finally:
        lock.close()


async def _run_locked(
    db: Database, settings: Settings, runs_dir: Path, *, trigger: str, progress: ProgressFn | None
) -> TrainingResult:
    t = settings.training
    run_id = new_run_id()
    tmp_dir = runs_dir / f"{run_id}.tmp"
    live = await store.count_live_pairs(db)
    await store.create_run(
        db,
        run_id,
        trigger=trigger,
        base_model=t.base_model or "(bundled SmolLM2)",
        live=live,
        run_dir=str(runs_dir / run_id),
    )
    log.info("training.queued", run_id=run_id, trigger=trigger, live_pairs=live)

    async def failed(error: str, n_train: int = 0, n_holdout: int = 0) -> TrainingResult:
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=error)
        return TrainingResult(run_id, "failed", None, None, error, n_train, n_holdout, live)

    try:
        cmd, snap = await _prepare_run_dir(db, settings, run_id, tmp_dir, trigger=trigger)
    except (OSError, ValueError) as exc:
        return await failed(f"setup: {exc}")
    shortage = _too_few_pairs(snap, sweep=bool(t.sweep))
    if shortage is not None:
        return await failed(shortage, snap.n_train, snap.n_holdout)
    outcome = await _supervise(
        db,
        run_id,
        cmd,
        tmp_dir,
        snap.n_train,
        snap.n_holdout,
        timeout_s=t.timeout_s,
        progress=progress,
    )
    if outcome is not None:
        log.error("training.failed", run_id=run_id, error=outcome[-500:])
        return await failed(outcome, snap.n_train, snap.n_holdout)
    final = runs_dir / run_id
    if not (final / "metrics.json").is_file():
        error = f"the training child exited 0 but {final}/metrics.json is missing"
        return await failed(error, snap.n_train, snap.n_holdout)
    metrics = json.loads((final / "metrics.json").read_text(encoding="utf-8"))
    await store.mark_succeeded(db, run_id, run_dir=str(final), metrics=metrics)
    log.info("training.succeeded", run_id=run_id, run_dir=str(final))
    return TrainingResult(
        run_id, "succeeded", final, metrics, None, snap.n_train, snap.n_holdout, live
    )


async def _prepare_run_dir(
    db: Database, settings: Settings, run_id: str, tmp_dir: Path, *, trigger: str
) -> tuple[list[str], SnapshotSummary]:
    """`<id>.tmp/`: the dataset snapshot, the eval sets, spec.json; the child's argv."""
    t = settings.training
    base = resolve_base_model(t.base_model)
    gpus = await anyio.to_thread.run_sync(launch.visible_gpu_count)
    procs = launch.resolve_num_processes(t.num_processes, gpus)
    spec = spec_from_settings(
        t, run_id=run_id, trigger=trigger, base_model=base, num_processes=procs
    )
    pairs = await store.live_pairs(db)
    held_out = await store.count_held_out_pairs(db)

    def snapshot() -> SnapshotSummary:
        dataset = tmp_dir / "dataset"
        snap = write_snapshot(
            pairs,
            dataset,
            holdout_fraction=t.holdout_fraction,
            validation_fraction=t.validation_fraction,
        )
        if snap.n_holdout == 0 and snap.n_validation > 0 and not t.sweep:
            return validation_as_holdout(dataset, snap)
        return snap

    snap = await anyio.to_thread.run_sync(snapshot)
    if snap.holdout_from == "validation":
        log.warning(
            "training.holdout_from_validation",
            run_id=run_id,
            n_holdout=snap.n_holdout,
            why="no live pair's source chunk hashes to the holdout part",
        )
    e = settings.evaluation
    await snapshot_sets(
        db,
        list(e.sets),
        tmp_dir / "evalsets",
        retrieval_k=e.retrieval_k if e.retrieval_baseline else None,
    )
    _write_split_summary(tmp_dir / "dataset" / "summary.json", snap, held_out)
    (tmp_dir / "spec.json").write_text(spec.to_json(), encoding="utf-8")
    cmd = launch.child_command(
        tmp_dir / "spec.json", num_processes=procs, distributed=t.distributed
    )
    return cmd, snap


def _too_few_pairs(snap: SnapshotSummary, *, sweep: bool) -> str | None:
    """Why the split cannot train (None: it can)."""
    if snap.n_train < 1 or snap.n_holdout < 1:
        return (
            f"not enough pairs: {snap.n_train} train / {snap.n_holdout} holdout after the split"
            " (need at least one of each)"
        )
    if sweep and snap.n_validation < 1:
        return (
            "not enough pairs for a sweep: the validation part is empty"
            f" ({snap.n_train} train / {snap.n_holdout} holdout); raise"
            " training.validation_fraction or add pairs"
        )
    return None


async def _supervise(
    db: Database,
    run_id: str,
    cmd: list[str],
    tmp_dir: Path,
    n_train: int,
    n_holdout: int,
    *,
    timeout_s: float,
    progress: ProgressFn | None,
) -> str | None:
    """Run the child to completion; None on success, else the failure text (stderr tail)."""
    child = ChildProcess(cmd, name="the training child", on_event=progress)

    async def started(pid: int) -> None:
        log.info("training.running", run_id=run_id, pid=pid, cmd=" ".join(cmd))
        await store.mark_running(db, run_id, pid=pid, n_train=n_train, n_holdout=n_holdout)

    try:
        ended = await child.run(timeout_s=timeout_s, on_start=started)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await store.mark_failed(
                db,
                run_id,
                run_dir=_left_over(tmp_dir),
                error="cancelled: the training child was stopped" + child.formatted_tail(),
            )
        raise
    return ended.failure()


def _write_split_summary(path: Path, snap: SnapshotSummary, held_out: int) -> None:
    summary = {
        "rule": "by source chunk (sha256 of the chunk id): every pair of a chunk on one side",
        "n_train": snap.n_train,
        "n_validation": snap.n_validation,
        "n_holdout": snap.n_holdout,
        "holdout_from": snap.holdout_from,
        "n_duplicates": snap.n_duplicates,
        "n_chunks": snap.n_chunks,
        "n_held_out_pages_pairs": held_out,
    }
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _left_over(tmp_dir: Path) -> str | None:
    return str(tmp_dir) if tmp_dir.is_dir() else None


def _try_lock(path: Path) -> Any:
    fh = path.open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise TrainingBusyError(f"another training run holds {path}") from None
    return fh


def _prune_failed_dirs(runs_dir: Path) -> None:
    """Keep only the newest incomplete `<id>.tmp` (for post-mortem/resume); drop older ones."""
    leftovers = sorted(p for p in runs_dir.glob("*.tmp") if p.is_dir())
    for path in leftovers[:-1]:
        shutil.rmtree(path, ignore_errors=True)
