"""Pair exports: `<state_dir>/<repo>_qa.jsonl` kept in step with the DB, and `doctune export`."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import anyio

from state.db import Database
from state.pairs import list_pairs, pair_repos, pair_sources, repo_signatures

__all__ = [
    "ExportFormat",
    "ExportTargetError",
    "JsonlExporter",
    "export_dataset",
    "export_row",
    "repo_jsonl_path",
]

ExportFormat = Literal["jsonl", "parquet", "hf"]


class ExportTargetError(ValueError):
    """The output path cannot take this export (a file where a directory goes, or the reverse,
    or a directory that is not an earlier export); nothing was written."""


def _file_mode() -> int:
    """0o666 minus the process umask: what `open()` would give, so exports match the DB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no procfs: read it the classic way (and put it back)
    os.umask(current)
    return 0o666 & ~current


def repo_jsonl_path(state_dir: Path, repo: str) -> Path:
    """`<state_dir>/<repo>_qa.jsonl` (characters unsafe in file names become `_`)."""
    return state_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', repo)}_qa.jsonl"


def export_row(pair: dict[str, Any]) -> dict[str, Any]:
    """One exported pair: the seed's fields first (question, answer, repo, file, strategy,
    chunk_preview), then provenance: the chunk it was asked about (`chunk_id`, lines) and
    `sources`, every live chunk it serves (that chunk and those containing it, any strategy)."""
    return {
        "question": pair["question"],
        "answer": pair["answer"],
        "repo": pair["repo"],
        "file": pair["path"],
        "strategy": pair["strategy"],
        "chunk_preview": pair["chunk_preview"],
        "chunk_id": pair["chunk_id"],
        "start_line": pair["start_line"],
        "end_line": pair["end_line"],
        "commit": pair["git_commit"],
        "model": pair["model"],
        "prompt_version": pair["prompt_version"],
        "pair_id": pair["id"],
        "created_at": pair["created_at"],
        "retired": pair["retired_at"] is not None,
        "sources": pair.get("sources", []),
    }


async def _rows(db: Database, repo: str | None, include_retired: bool) -> list[dict[str, Any]]:
    pairs = await list_pairs(db, repo=repo, include_retired=include_retired)
    sources = await pair_sources(db, [p["id"] for p in pairs])
    return [export_row({**p, "sources": sources.get(p["id"], [])}) for p in pairs]


def _write_jsonl_atomically(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; an export follows the umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JsonlExporter:
    """Rewrites a repo's JSONL (live pairs, id order) only when its live set changed."""

    def __init__(self, db: Database, state_dir: Path) -> None:
        self.db = db
        self.state_dir = state_dir
        self._written: dict[str, tuple[int, ...]] = {}

    async def sync(self) -> list[str]:
        """Export every repo whose live pairs changed since the last sync; returns them."""
        signatures = await repo_signatures(self.db)
        changed = []
        for repo in sorted(set(await pair_repos(self.db)) | set(self._written)):
            signature = signatures.get(repo, (0, 0, 0))
            path = repo_jsonl_path(self.state_dir, repo)
            if self._written.get(repo) == signature and path.exists():
                continue
            rows = await _rows(self.db, repo, False)
            await anyio.to_thread.run_sync(_write_jsonl_atomically, path, rows)
            self._written[repo] = signature
            changed.append(repo)
        return changed


async def export_dataset(
    db: Database,
    fmt: ExportFormat,
    out: Path,
    *,
    repo: str | None = None,
    include_retired: bool = False,
) -> int:
    """Write pairs as one JSONL file, a Parquet file, or a `datasets` dataset directory."""
    rows = await _rows(db, repo, include_retired)
    await anyio.to_thread.run_sync(_export_rows, fmt, out, rows)
    return len(rows)


def _check_target(fmt: ExportFormat, out: Path) -> None:
    if fmt != "hf":
        if out.is_dir():
            raise ExportTargetError(f"--out {out} is a directory; {fmt} writes one file")
        return
    if out.exists() and not out.is_dir():
        raise ExportTargetError(
            f"--out {out} is an existing file; the hf format writes a directory: choose another"
            " path"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset_info.json").is_file():
        raise ExportTargetError(
            f"--out {out} is a directory that is not an earlier hf export; it is left alone:"
            " choose another path"
        )


def _export_rows(fmt: ExportFormat, out: Path, rows: list[dict[str, Any]]) -> None:
    _check_target(fmt, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        _write_jsonl_atomically(out, rows)
        return
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=_arrow_schema(pa))
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            from datasets import Dataset  # heavy import: only for this format

            shutil.rmtree(tmp, ignore_errors=True)
            Dataset(table).save_to_disk(str(tmp))
            _chmod_tree(tmp)
            if out.exists():
                shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _chmod_tree(root: Path) -> None:
    """`datasets` writes some files 0600: give every file the umask's mode."""
    mode = _file_mode()
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def _arrow_schema(pa: Any) -> Any:
    # An explicit schema keeps column types stable even for an empty export.
    return pa.schema(
        [
            ("question", pa.string()),
            ("answer", pa.string()),
            ("repo", pa.string()),
            ("file", pa.string()),
            ("strategy", pa.string()),
            ("chunk_preview", pa.string()),
            ("chunk_id", pa.string()),
            ("start_line", pa.int64()),
            ("end_line", pa.int64()),
            ("commit", pa.string()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
            ("pair_id", pa.int64()),
            ("created_at", pa.float64()),
            ("retired", pa.bool_()),
            (
                "sources",
                pa.list_(
                    pa.struct(
                        [
                            ("chunk_id", pa.string()),
                            ("file", pa.string()),
                            ("strategy", pa.string()),
                            ("start_line", pa.int64()),
                            ("end_line", pa.int64()),
                        ]
                    )
                ),
            ),
        ]
    )
