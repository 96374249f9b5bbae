"""Launch one training run as a child process in its own process group and record it.

queued (row written, dataset snapshot) → running (child started) → succeeded (the child
renamed `<id>.tmp` to `<id>`) or failed (non-zero exit, killed — e.g. OOM —, timeout or
cancellation; the stderr tail is stored). Cancelling the caller kills the child's whole
process group (SIGTERM, then SIGKILL), so a stopping daemon never leaves a trainer behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from anyio.abc import ByteReceiveStream, Process

from pipeline.evaluation.sets import snapshot_sets
from pipeline.settings import Settings
from pipeline.train import launch
from pipeline.train.base_model import resolve_base_model
from pipeline.train.dataset import SnapshotSummary, write_snapshot
from pipeline.train.spec import spec_from_settings
from state import training as store
from state.db import Database

__all__ = ["ProgressFn", "TrainingBusyError", "TrainingResult", "new_run_id", "run_training"]

log = structlog.get_logger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
STDERR_TAIL_LINES = 40
TERM_GRACE_S = 10.0
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

    def failed(error: str, n_train: int = 0, n_holdout: int = 0) -> TrainingResult:
        return TrainingResult(run_id, "failed", None, None, error, n_train, n_holdout, live)

    try:
        base = resolve_base_model(t.base_model)
        gpus = await anyio.to_thread.run_sync(launch.visible_gpu_count)
        procs = launch.resolve_num_processes(t.num_processes, gpus)
        spec = spec_from_settings(
            t, run_id=run_id, trigger=trigger, base_model=base, num_processes=procs
        )
        pairs = await store.live_pairs(db)
        held_out = await store.count_held_out_pairs(db)
        snap = await anyio.to_thread.run_sync(
            lambda: write_snapshot(
                pairs,
                tmp_dir / "dataset",
                holdout_fraction=t.holdout_fraction,
                validation_fraction=t.validation_fraction,
            )
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
    except (OSError, ValueError) as exc:
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=f"setup: {exc}")
        return failed(f"setup: {exc}")
    if snap.n_train < 1 or snap.n_holdout < 1:
        error = (
            f"not enough pairs: {snap.n_train} train / {snap.n_holdout} holdout after the split"
            " (need at least one of each)"
        )
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=error)
        return failed(error, snap.n_train, snap.n_holdout)
    if t.sweep and snap.n_validation < 1:
        error = (
            "not enough pairs for a sweep: the validation part is empty"
            f" ({snap.n_train} train / {snap.n_holdout} holdout); raise"
            " training.validation_fraction or add pairs"
        )
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=error)
        return failed(error, snap.n_train, snap.n_holdout)

    cmd = launch.child_command(
        tmp_dir / "spec.json", num_processes=procs, distributed=t.distributed
    )
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
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=outcome)
        log.error("training.failed", run_id=run_id, error=outcome[-500:])
        return failed(outcome, snap.n_train, snap.n_holdout)
    final = runs_dir / run_id
    if not (final / "metrics.json").is_file():
        error = f"the training child exited 0 but {final}/metrics.json is missing"
        await store.mark_failed(db, run_id, run_dir=_left_over(tmp_dir), error=error)
        return failed(error, snap.n_train, snap.n_holdout)
    metrics = json.loads((final / "metrics.json").read_text(encoding="utf-8"))
    await store.mark_succeeded(db, run_id, run_dir=str(final), metrics=metrics)
    log.info("training.succeeded", run_id=run_id, run_dir=str(final))
    return TrainingResult(
        run_id, "succeeded", final, metrics, None, snap.n_train, snap.n_holdout, live
    )


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
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    process = await anyio.open_process(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: killpg reaches every worker
        env=launch.child_env(),
    )
    log.info("training.running", run_id=run_id, pid=process.pid, cmd=" ".join(cmd))
    timed_out = False
    try:
        await store.mark_running(db, run_id, pid=process.pid, n_train=n_train, n_holdout=n_holdout)
        with anyio.move_on_after(timeout_s if timeout_s > 0 else None) as scope:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(_pump_progress, process.stdout, progress)
                tg.start_soon(_pump_tail, process.stderr, tail)
                await process.wait()
        timed_out = scope.cancelled_caught
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _kill_group(process)
            await store.mark_failed(
                db,
                run_id,
                run_dir=_left_over(tmp_dir),
                error="cancelled: the training child was stopped" + _format_tail(tail),
            )
        raise
    if timed_out:
        await _kill_group(process)
        return f"timed out after {timeout_s:.0f} s" + _format_tail(tail)
    code = process.returncode
    if code == 0:
        return None
    return _describe_exit(code) + _format_tail(tail)


def _write_split_summary(path: Path, snap: SnapshotSummary, held_out: int) -> None:
    summary = {
        "rule": "by source chunk (sha256 of the chunk id): every pair of a chunk on one side",
        "n_train": snap.n_train,
        "n_validation": snap.n_validation,
        "n_holdout": snap.n_holdout,
        "n_duplicates": snap.n_duplicates,
        "n_chunks": snap.n_chunks,
        "n_held_out_pages_pairs": held_out,
    }
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _left_over(tmp_dir: Path) -> str | None:
    return str(tmp_dir) if tmp_dir.is_dir() else None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the training child did not report an exit status"
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == 9 else ""
        return f"the training child was killed by {sig}{hint}"
    return f"the training child exited with status {code}"


def _format_tail(tail: deque[str]) -> str:
    return ("\n--- stderr tail ---\n" + "\n".join(tail)) if tail else ""


async def _pump_progress(stream: ByteReceiveStream, progress: ProgressFn | None) -> None:
    async for line in _lines(stream):
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if progress is not None and isinstance(event, dict):
            progress(event)


async def _pump_tail(stream: ByteReceiveStream, tail: deque[str]) -> None:
    async for line in _lines(stream):
        # tqdm redraws with \r; keep only the last state of such a line.
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line:
            tail.append(line[:1000])


async def _lines(stream: ByteReceiveStream) -> Any:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            yield raw.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


async def _kill_group(process: Process) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, reap the child."""
    for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with anyio.move_on_after(grace):
            await process.wait()
            if sig == signal.SIGTERM:
                # The leader is gone; SIGKILL any worker that ignored SIGTERM.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            return


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
