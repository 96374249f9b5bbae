"""Hostile inputs never crash a scan; each is recorded with a reason and shown by status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli import main
from pipeline.ingest import parse
from pipeline.ingest.reconcile import reconcile
from pipeline.settings import PathsSettings, Settings, SourcesSettings
from state.db import open_db

pytestmark = pytest.mark.anyio


def _hostile_repo(root: Path) -> Path:
    docs = root / "sources" / "evil" / "docs"
    docs.mkdir(parents=True)
    (docs / "good.md").write_text("# Fine\n\nA perfectly ordinary paragraph about queries.\n")
    (docs / "nul.md").write_bytes(b"# Title\n\x00\x01binary junk\n")
    (docs / "latin1.md").write_bytes(b"# Caf\xe9\n\nSome text with a stray \xff byte in it.\n")
    with open(docs / "huge.md", "wb") as fh:
        fh.truncate(1 << 30)  # 1 GB sparse: must be skipped by size, never read
    os.symlink("loop_b.md", docs / "loop_a.md")
    os.symlink("loop_a.md", docs / "loop_b.md")
    os.symlink("/etc/passwd", docs / "passwd.md")
    os.symlink("good.md", docs / "alias.md")  # inside the repo: allowed
    os.mkfifo(docs / "fifo.md")
    (docs / "vanishing.md").write_text("# Gone\n\nThis file is deleted during the scan.\n")
    with open(os.fsencode(docs) + b"/bad\xffname.md", "wb") as fh:
        fh.write(b"# Undecodable file name\n")
    return docs


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "state", models_dir=tmp_path / "models"),
        sources=SourcesSettings(dir=tmp_path / "sources"),
    )


async def test_hostile_files_are_recorded_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _hostile_repo(tmp_path)
    original = parse.read_worktree_file

    def delete_then_read(root: Path, rel: str, max_bytes: int, **kw: object) -> object:
        if rel.endswith("vanishing.md"):
            (docs / "vanishing.md").unlink()
        return original(root, rel, max_bytes, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(parse, "read_worktree_file", delete_then_read)
    db = await open_db(tmp_path / "state" / "doctune.sqlite3")
    try:
        await reconcile(db, _settings(tmp_path))
        rows = await db.fetchall("SELECT path, status, reason, flags FROM files")
    finally:
        await db.close()
    got = {Path(r["path"]).name: (r["status"], r["reason"], r["flags"]) for r in rows}
    assert got["good.md"][0] == "live"
    assert got["alias.md"][0] == "live"
    assert got["nul.md"][:2] == ("skipped", "binary")
    assert got["latin1.md"] == ("live", None, "invalid_utf8")
    assert got["huge.md"][:2] == ("skipped", "too_large")
    assert got["loop_a.md"][:2] == ("skipped", "symlink_loop")
    assert got["loop_b.md"][:2] == ("skipped", "symlink_loop")
    assert got["passwd.md"][:2] == ("skipped", "symlink_outside_repo")
    assert got["fifo.md"][:2] == ("skipped", "not_regular_file:fifo")
    assert got["vanishing.md"][:2] == ("deleted", "vanished_during_scan")
    assert got["bad\\xffname.md"][:2] == ("skipped", "undecodable_file_name")


def test_status_shows_every_skip_with_its_reason(tmp_path: Path) -> None:
    _hostile_repo(tmp_path)
    config = tmp_path / "doctune.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\nmodels_dir = "{tmp_path / "models"}"\n'
        f'[sources]\ndir = "{tmp_path / "sources"}"\n'
    )
    runner = CliRunner()
    scan = runner.invoke(main, ["--config", str(config), "scan"])
    assert scan.exit_code == 0, scan.output
    status = runner.invoke(main, ["--config", str(config), "status", "--json"])
    assert status.exit_code == 0, status.output
    snap = json.loads(status.output.strip().splitlines()[-1])
    reasons = snap["skips"]["by_reason"]
    for reason in ("binary", "too_large", "symlink_loop", "symlink_outside_repo"):
        assert reason in reasons
    assert "not_regular_file:fifo" in reasons
    listed = {row["path"] for row in snap["skips"]["files"]}
    assert "docs/huge.md" in listed
    assert snap["files"]["flagged"] == {"invalid_utf8": 1}
    text = runner.invoke(main, ["--config", str(config), "status"])
    assert "symlink_outside_repo" in text.output
    assert "docs/passwd.md" in text.output
