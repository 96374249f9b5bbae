"""The status snapshot shared by `doctune status` and the daemon's /status endpoint.

Each feature contributes its own top-level keys; ingestion owns "files", "chunks",
"skips" (per-repository scan facts live under files.repos).
"""

from __future__ import annotations

from typing import Any

from state.db import Database
from state.generation_status import job_status
from state.meta import read_meta_json
from state.registrations import served_model
from state.training import training_status

__all__ = ["ingest_snapshot", "snapshot"]

SKIP_SAMPLE = 50  # skipped/deleted paths listed individually; the rest are counted


async def snapshot(db: Database) -> dict[str, Any]:
    """A JSON-able view of the whole state."""
    out: dict[str, Any] = {}
    out.update(await ingest_snapshot(db))
    out.update(await job_status(db))
    out["served_model"] = await served_model(db)
    out["serving"] = await read_meta_json(db, "serve")  # `doctune serve` / [serve] component
    out["training"] = await training_status(db)
    return out


async def ingest_snapshot(db: Database) -> dict[str, Any]:
    """Ingestion: files by status/kind, live chunks by strategy, skips with reasons, repos."""
    files = await _files(db)
    files["repos"] = await _repos(db)
    return {"files": files, "chunks": await _chunks(db), "skips": await _skips(db)}


async def _files(db: Database) -> dict[str, Any]:
    """Files by status, live files by kind, live files by flags."""
    files: dict[str, Any] = {"total": 0, "by_status": {}, "by_kind": {}}
    for row in await db.fetchall(
        "SELECT status, kind, count(*) AS n FROM files GROUP BY status, kind"
    ):
        files["total"] += row["n"]
        files["by_status"][row["status"]] = files["by_status"].get(row["status"], 0) + row["n"]
        if row["status"] == "live":
            files["by_kind"][row["kind"]] = row["n"]
    flagged = await db.fetchall(
        "SELECT flags, count(*) AS n FROM files WHERE status = 'live' AND flags IS NOT NULL"
        " GROUP BY flags"
    )
    files["flagged"] = {r["flags"]: r["n"] for r in flagged}
    return files


async def _chunks(db: Database) -> dict[str, Any]:
    """Chunks stored and live, memberships and distinct chunks per strategy."""
    by_strategy = {
        r["strategy"]: {"memberships": r["m"], "distinct": r["d"]}
        for r in await db.fetchall(
            "SELECT m.strategy, count(*) AS m, count(DISTINCT m.chunk_id) AS d"
            " FROM memberships m JOIN files f ON f.id = m.file_id WHERE f.status = 'live'"
            " GROUP BY m.strategy ORDER BY m.strategy"
        )
    }
    return {
        "stored": await db.scalar("SELECT count(*) FROM chunks"),
        "live": await db.scalar("SELECT count(*) FROM live_chunks"),
        "by_strategy": by_strategy,
    }


async def _skips(db: Database) -> dict[str, Any]:
    """Skipped files by reason, and the latest skipped or vanished files."""
    reasons = {
        r["reason"]: r["n"]
        for r in await db.fetchall(
            "SELECT COALESCE(reason, 'removed') AS reason, count(*) AS n FROM files"
            " WHERE status = 'skipped' GROUP BY reason ORDER BY n DESC"
        )
    }
    recent = [
        {"repo": r["repo"], "path": r["path"], "status": r["status"], "reason": r["reason"]}
        for r in await db.fetchall(
            "SELECT repo, path, status, reason FROM files"
            " WHERE status = 'skipped' OR (status = 'deleted' AND reason LIKE 'vanished%')"
            " ORDER BY updated_at DESC, path LIMIT ?",
            (SKIP_SAMPLE,),
        )
    ]
    return {"by_reason": reasons, "files": recent}


async def _repos(db: Database) -> list[dict[str, Any]]:
    return [
        {
            "name": r["name"],
            "root": r["root"],
            "ingested_commit": r["ingested_commit"],
            "last_scan_at": r["last_scan_at"],
            "last_scan_ms": r["last_scan_ms"],
        }
        for r in await db.fetchall(
            "SELECT name, root, ingested_commit, last_scan_at, last_scan_ms FROM repos"
            " ORDER BY name"
        )
    ]
