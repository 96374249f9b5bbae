"""Registrations: which tuned model versions exist in a registry (Ollama or the embedded
llama.cpp one) and which one the alias serves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from state.db import Database, now

__all__ = [
    "Registration",
    "activate",
    "active_registration",
    "get_registration",
    "list_registrations",
    "mark_deleted",
    "mark_failed",
    "mark_run_failed",
    "mark_run_rejected",
    "note_error",
    "registration_for_run",
    "roll_back",
    "run_for_registration",
    "served_model",
    "start_registration",
]

_COLUMNS = "id, run_id, model_tag, alias, state, mode, created_at, updated_at, error, backend"


@dataclass(frozen=True)
class Registration:
    """One `<name>:<run-id>` version created (or being created) in a registry backend."""

    id: int
    run_id: str | None
    model_tag: str
    alias: str
    state: str  # creating | active | superseded | deleted | failed
    mode: str
    created_at: float
    updated_at: float
    error: str | None
    backend: str = "ollama"  # ollama | llamacpp

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(r: Any) -> Registration:
    return Registration(*(r[i] for i in range(10)))


async def get_registration(db: Database, reg_id: int) -> Registration | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM registrations WHERE id = ?", (reg_id,))
    return None if row is None else _row(row)


async def registration_for_run(db: Database, run_id: str, model_tag: str) -> Registration | None:
    """The newest registration of `run_id` under `model_tag`, if any."""
    row = await db.fetchone(
        f"SELECT {_COLUMNS} FROM registrations WHERE run_id = ? AND model_tag = ?"
        " ORDER BY id DESC LIMIT 1",
        (run_id, model_tag),
    )
    return None if row is None else _row(row)


async def start_registration(
    db: Database, *, run_id: str, model_tag: str, alias: str, mode: str, backend: str = "ollama"
) -> Registration:
    """The row for this run and tag: an earlier one is reused (one row per version).

    A failed, interrupted or deleted attempt goes back to `creating`; a version that is
    active or superseded keeps its state (re-registering only re-points the alias).
    """
    at = now()
    async with db.write() as conn:
        cur = await conn.execute(
            "SELECT id, state FROM registrations WHERE run_id = ? AND model_tag = ?"
            " AND backend = ? ORDER BY id DESC LIMIT 1",
            (run_id, model_tag, backend),
        )
        found = await cur.fetchone()
        if found is not None and found[1] in ("active", "superseded"):
            reg_id = int(found[0])
        elif found is not None:
            reg_id = int(found[0])
            await conn.execute(
                "UPDATE registrations SET state = 'creating', mode = ?, alias = ?,"
                " updated_at = ?, error = NULL WHERE id = ?",
                (mode, alias, at, reg_id),
            )
        else:
            cur = await conn.execute(
                "INSERT INTO registrations (run_id, model_tag, alias, state, mode, created_at,"
                " updated_at, backend) VALUES (?, ?, ?, 'creating', ?, ?, ?, ?)",
                (run_id, model_tag, alias, mode, at, at, backend),
            )
            reg_id = int(cur.lastrowid or 0)
    reg = await get_registration(db, reg_id)
    assert reg is not None
    return reg


async def mark_failed(db: Database, reg_id: int, *, error: str, fail_run: bool = True) -> None:
    """The registration failed before the alias moved; the run is marked failed with why."""
    at = now()
    async with db.write() as conn:
        await conn.execute(
            "UPDATE registrations SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
            (error, at, reg_id),
        )
        if fail_run:
            await conn.execute(
                "UPDATE training_runs SET state = 'failed', error = ? WHERE id ="
                " (SELECT run_id FROM registrations WHERE id = ?)",
                (f"registration failed: {error}", reg_id),
            )


async def activate(db: Database, reg_id: int) -> None:
    """The alias now serves this registration: it becomes active, the previous superseded."""
    at = now()
    async with db.write() as conn:
        await conn.execute(
            "UPDATE registrations SET state = 'superseded', updated_at = ?"
            " WHERE state = 'active' AND id != ?"
            " AND (alias, backend) = (SELECT alias, backend FROM registrations WHERE id = ?)",
            (at, reg_id, reg_id),
        )
        await conn.execute(
            "UPDATE registrations SET state = 'active', error = NULL, updated_at = ? WHERE id = ?",
            (at, reg_id),
        )
        await conn.execute(
            "UPDATE training_runs SET state = 'registered', error = NULL WHERE id ="
            " (SELECT run_id FROM registrations WHERE id = ?)",
            (reg_id,),
        )


async def mark_deleted(db: Database, reg_id: int) -> None:
    async with db.write() as conn:
        await conn.execute(
            "UPDATE registrations SET state = 'deleted', updated_at = ? WHERE id = ?",
            (now(), reg_id),
        )


async def roll_back(db: Database, *, from_id: int, to_id: int) -> None:
    """After the alias was copied back: `to_id` active again, `from_id` superseded."""
    at = now()
    async with db.write() as conn:
        await conn.execute(
            "UPDATE registrations SET state = 'superseded', error = ?, updated_at = ? WHERE id = ?",
            ("rolled back", at, from_id),
        )
        await conn.execute(
            "UPDATE registrations SET state = 'active', error = NULL, updated_at = ? WHERE id = ?",
            (at, to_id),
        )


async def note_error(db: Database, reg_id: int, *, error: str) -> None:
    """Record a failure after the alias moved (pruning): the state stays what it is."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE registrations SET error = ?, updated_at = ? WHERE id = ?",
            (error, now(), reg_id),
        )


async def mark_run_failed(db: Database, run_id: str, *, error: str) -> None:
    """The gate could not decide (its evaluation broke): the run is failed, with why."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE training_runs SET state = 'failed', error = ? WHERE id = ?",
            (error[-2000:], run_id),
        )


async def mark_run_rejected(db: Database, run_id: str, *, reason: str) -> None:
    """The evaluation gate refused the run; `reason` carries the numbers."""
    async with db.write() as conn:
        await conn.execute(
            "UPDATE training_runs SET state = 'rejected', error = ? WHERE id = ?",
            (reason, run_id),
        )


async def list_registrations(db: Database, *, alias: str | None = None) -> list[Registration]:
    """Registrations oldest first (optionally for one alias)."""
    if alias is None:
        rows = await db.fetchall(f"SELECT {_COLUMNS} FROM registrations ORDER BY id")
    else:
        rows = await db.fetchall(
            f"SELECT {_COLUMNS} FROM registrations WHERE alias = ? ORDER BY id", (alias,)
        )
    return [_row(r) for r in rows]


async def active_registration(
    db: Database, alias: str, *, backend: str | None = None
) -> Registration | None:
    """The version `alias` serves (in `backend`, when given; else the newest switch)."""
    row = await db.fetchone(
        f"SELECT {_COLUMNS} FROM registrations WHERE alias = ? AND state = 'active'"
        " AND (? IS NULL OR backend = ?) ORDER BY updated_at DESC LIMIT 1",
        (alias, backend, backend),
    )
    return None if row is None else _row(row)


async def served_model(db: Database) -> dict[str, Any] | None:
    """The `served_model` status key: the active version, when it was trained, on how much."""
    row = await db.fetchone(
        "SELECT r.alias, r.model_tag, r.run_id, r.mode, r.backend, r.updated_at AS served_since,"
        " t.finished_at AS trained_at, t.n_train, t.n_holdout, t.live_pairs, t.base_model"
        " FROM registrations r LEFT JOIN training_runs t ON t.id = r.run_id"
        " WHERE r.state = 'active' ORDER BY r.updated_at DESC LIMIT 1"
    )
    if row is None:
        return None
    versions = await db.scalar(
        "SELECT count(*) FROM registrations WHERE alias = ? AND backend = ?"
        " AND state IN ('active', 'superseded')",
        (row["alias"], row["backend"]),
    )
    return {**{k: row[k] for k in row.keys()}, "versions_kept": versions}  # noqa: SIM118


async def run_for_registration(db: Database, run_id: str) -> dict[str, Any] | None:
    """The training run's state, directory and metrics (what registration needs)."""
    row = await db.fetchone(
        "SELECT id, state, run_dir, metrics_json, error FROM training_runs WHERE id = ?",
        (run_id,),
    )
    return None if row is None else {k: row[k] for k in row.keys()}  # noqa: SIM118
