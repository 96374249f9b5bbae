"""Safe reading of single files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ingest import reader
from pipeline.ingest.reader import read_worktree_file


def test_regular_file_is_read_and_hashed(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("héllo\n")
    got = read_worktree_file(tmp_path, "a.md", 100)
    assert got.ok
    assert got.text == "héllo\n"
    assert got.size == len("héllo\n".encode())
    assert got.content_hash is not None
    assert len(got.content_hash) == 64


def test_known_hash_skips_decoding(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("same\n")
    first = read_worktree_file(tmp_path, "a.md", 100)
    again = read_worktree_file(tmp_path, "a.md", 100, known_hash=first.content_hash)
    assert again.ok
    assert again.content_hash == first.content_hash
    assert again.text == ""


def test_nul_in_first_8000_bytes_is_binary_but_later_nul_is_text(tmp_path: Path) -> None:
    (tmp_path / "bin.md").write_bytes(b"x" * 100 + b"\x00")
    (tmp_path / "late.md").write_bytes(b"x" * 9000 + b"\x00")
    assert read_worktree_file(tmp_path, "bin.md", 100_000).reason == "binary"
    assert read_worktree_file(tmp_path, "late.md", 100_000).ok


def test_invalid_utf8_is_replaced_and_flagged(tmp_path: Path) -> None:
    (tmp_path / "x.md").write_bytes(b"caf\xe9 ok")
    got = read_worktree_file(tmp_path, "x.md", 100)
    assert got.ok
    assert got.flags == ["invalid_utf8"]
    assert "\ufffd" in got.text


def test_size_cap_skips_without_reading(tmp_path: Path) -> None:
    with open(tmp_path / "big.md", "wb") as fh:
        fh.truncate(5000)
    got = read_worktree_file(tmp_path, "big.md", 4999)
    assert (got.ok, got.reason, got.size) == (False, "too_large", 5000)


def test_missing_file_is_vanished(tmp_path: Path) -> None:
    assert read_worktree_file(tmp_path, "nope.md", 100).reason == "vanished"


def test_symlink_escaping_the_repo_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("secret")
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(outside, repo / "link.md")
    os.symlink("../repo/../outside.md", repo / "rel.md")
    assert read_worktree_file(repo, "link.md", 100).reason == "symlink_outside_repo"
    assert read_worktree_file(repo, "rel.md", 100).reason == "symlink_outside_repo"


def test_dangling_symlink_and_directory(tmp_path: Path) -> None:
    os.symlink("missing.md", tmp_path / "dangling.md")
    (tmp_path / "dir.md").mkdir()
    assert read_worktree_file(tmp_path, "dangling.md", 100).reason == "dangling_symlink"
    assert read_worktree_file(tmp_path, "dir.md", 100).reason == "not_regular_file:directory"


def test_file_changing_during_every_read_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "busy.md"
    path.write_text("v0")
    real_read = os.read
    counter = {"n": 0}

    def growing_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if data:
            counter["n"] += 1
            with open(path, "a") as fh:  # a writer appends while we read
                fh.write(f" v{counter['n']}")
        return data

    monkeypatch.setattr(reader.os, "read", growing_read)
    got = read_worktree_file(tmp_path, "busy.md", 1000)
    assert (got.ok, got.reason) == (False, "changed_during_read")
    assert counter["n"] >= 2  # read again after the first change
