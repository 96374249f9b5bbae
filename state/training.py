"""Training state: the live-pair snapshot a run trains on, and `training_runs` rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from state.db import Database, now

__all__ = [
    "LivePair",
    "TrainingRun",
    "count_held_out_pairs",
    "count_live_pairs",
    "create_run",
    "fail_stale_runs",
    "get_run",
    "list_runs",
    "live_pairs",
    "mark_failed",
    "mark_running",
    "mark_succeeded",
    "new_pairs_since_last_run",
    "pairs_changed_since",
    "training_status",
]

ERROR_MAX_CHARS = 4000
# Pairs whose chunk sits in a page held out for evaluation ([evaluation] holdout_globs).
_NOT_HELD_OUT = "chunk_id NOT IN (SELECT chunk_id FROM eval_holdout_chunks)"
ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class LivePair:
    """One question/answer pair whose chunk is still live (retired_at IS NULL)."""

    id: int
    question: str
    answer: str
    repo: str
    path: str
    chunk_id: str


@dataclass(frozen=True)
class TrainingRun:
    """A `training_runs` row, with `metrics` decoded."""

    id: str
    trigger: str
    state: str
    requested_at: float
    started_at: float | None
    finished_at: float | None
    base_model: str | None
    n_train: int | None
    n_holdout: int | None
    live_pairs: int | None
    run_dir: str | None
    pid: int | None
    metrics: dict[str, Any] | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view (used by `doctune runs --json` and the status snapshot)."""
        return {
            "id": self.id,
            "trigger": self.trigger,
            "state": self.state,
            "requested_at": self.requested_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "base_model": self.base_model,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "live_pairs": self.live_pairs,
            "run_dir": self.run_dir,
            "pid": self.pid,
            "metrics": self.metrics,
            "error": self.error,
        }


async def live_pairs(db: Database) -> list[LivePair]:
    """Every non-retired pair, in id order (the training snapshot), except pairs of
    pages held out for evaluation."""
    rows = await db.fetchall(
        "SELECT id, question, answer, repo, path, chunk_id FROM pairs"
        f" WHERE retired_at IS NULL AND {_NOT_HELD_OUT} ORDER BY id"
    )
    return [LivePair(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def count_live_pairs(db: Database) -> int:
    """How many pairs a run started now would see."""
    return int(
        await db.scalar(f"SELECT count(*) FROM pairs WHERE retired_at IS NULL AND {_NOT_HELD_OUT}")
    )


async def count_held_out_pairs(db: Database) -> int:
    """Live pairs left out of training because their chunk is in a held-out page."""
    return int(
        await db.scalar(
            "SELECT count(*) FROM pairs WHERE retired_at IS NULL"
            " AND chunk_id IN (SELECT chunk_id FROM eval_holdout_chunks)"
        )
    )


async def new_pairs_since_last_run(db: Database) -> int:
    """Live pairs created after the last successful run was requested (all, if none)."""
    since = await db.scalar(
        "SELECT max(requested_at) FROM training_runs WHERE state IN ('succeeded', 'registered')"
    )
    return int(
        await db.scalar(
            "SELECT count(*) FROM pairs WHERE retired_at IS NULL AND created_at > ?",
            (since if since is not None else -1.0,),
        )
    )


async def pairs_changed_since(db: Database, run: TrainingRun) -> bool:
    """Whether the live pairs differ from what `run` trained on (new ones, or fewer)."""
    newer = await db.scalar(
        "SELECT count(*) FROM pairs WHERE retired_at IS NULL AND created_at > ?",
        (run.requested_at,),
    )
    return bool(newer) or await count_live_pairs(db) != (run.live_pairs or 0)


async def create_run(
    db: Database, run_id: str, *, trigger: str, base_model: str, live: int, run_dir: str
) -> None:
    """Record a queued run."""
    async with db.write() as conn:
        await conn.execute(
            "INSERT INTO training_runs (id, trigger, state, requested_at, base_model,"
            " live_pairs, run_dir) VALUES (?, ?, 'queued', ?, ?, ?, ?)",
            (run_id, trigger, now(), base_model, live, run_dir),
        )


async def mark_running(
    db: Database, run_id: str, *, pid: int, n_train: int, n_holdout: int
) -> None:
    """The child process started."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE training_runs SET state = 'running', started_at = ?, pid = ?,"
            " n_train = ?, n_holdout = ? WHERE id = ?",
            (now(), pid, n_train, n_holdout, run_id),
        )


async def mark_succeeded(
    db: Database, run_id: str, *, run_dir: str, metrics: dict[str, Any]
) -> None:
    """The run directory is complete; keep a copy of its metrics."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE training_runs SET state = 'succeeded', finished_at = ?, run_dir = ?,"
            " metrics_json = ?, error = NULL WHERE id = ?",
            (now(), run_dir, json.dumps(metrics, sort_keys=True), run_id),
        )


async def mark_failed(db: Database, run_id: str, *, error: str, run_dir: str | None = None) -> None:
    """The run failed (or was cancelled); `error` is trimmed to its last characters;
    `run_dir` points at what is left (the incomplete `<id>.tmp`), if anything."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE training_runs SET state = 'failed', finished_at = ?, error = ?,"
            " run_dir = ? WHERE id = ?",
            (now(), error[-ERROR_MAX_CHARS:], run_dir, run_id),
        )


async def fail_stale_runs(db: Database, *, reason: str) -> int:
    """Mark queued/running rows left by a process that died without recording an outcome."""
    async with db.write() as conn:
        cur = await conn.execute(
            "UPDATE training_runs SET state = 'failed', finished_at = ?, error = ?"
            " WHERE state IN ('queued', 'running')",
            (now(), reason),
        )
        return cur.rowcount


async def get_run(db: Database, run_id: str) -> TrainingRun | None:
    """One run by id."""
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM training_runs WHERE id = ?", (run_id,))
    return None if row is None else _run(row)


async def list_runs(db: Database, *, limit: int | None = None) -> list[TrainingRun]:
    """Runs, newest first."""
    sql = f"SELECT {_COLUMNS} FROM training_runs ORDER BY requested_at DESC, id DESC"
    params: tuple[Any, ...] = ()
    if limit is not None:
        sql += " LIMIT ?"
        params = (limit,)
    return [_run(r) for r in await db.fetchall(sql, params)]


async def training_status(db: Database) -> dict[str, Any]:
    """The "training" key of the status snapshot: counts by state, the latest run, the backlog."""
    counts = {
        r[0]: r[1]
        for r in await db.fetchall("SELECT state, count(*) FROM training_runs GROUP BY state")
    }
    latest = await list_runs(db, limit=1)
    return {
        "runs": counts,
        "latest": latest[0].as_dict() if latest else None,
        "live_pairs": await count_live_pairs(db),
        "new_pairs_since_last_run": await new_pairs_since_last_run(db),
    }


_COLUMNS = (
    "id, trigger, state, requested_at, started_at, finished_at, base_model, n_train,"
    " n_holdout, live_pairs, run_dir, pid, metrics_json, error"
)


def _run(r: Any) -> TrainingRun:
    return TrainingRun(
        id=r[0],
        trigger=r[1],
        state=r[2],
        requested_at=r[3],
        started_at=r[4],
        finished_at=r[5],
        base_model=r[6],
        n_train=r[7],
        n_holdout=r[8],
        live_pairs=r[9],
        run_dir=r[10],
        pid=r[11],
        metrics=json.loads(r[12]) if r[12] else None,
        error=r[13],
    )
