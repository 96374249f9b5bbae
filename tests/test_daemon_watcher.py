"""Watch filtering and grouping, and real watchfiles events turned into reconcile hints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import pytest
from watchfiles import Change

from daemon.watcher import RepoChanges, RepoFilter, watch_repos
from pipeline.settings import PathsSettings, Settings, WatchSettings

pytestmark = pytest.mark.anyio


@dataclass
class SuffixRepo:
    """A minimal repo: .md files are docs, .rs files are code."""

    name: str
    root: Path

    def matches(self, rel_path: str) -> Literal["doc", "code"] | None:
        if rel_path.endswith(".md"):
            return "doc"
        return "code" if rel_path.endswith(".rs") else None


def _filter(tmp_path: Path, mode: Literal["worktree", "commits"] = "worktree") -> RepoFilter:
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "nested").mkdir(exist_ok=True)
    repos = [SuffixRepo("a", tmp_path / "a"), SuffixRepo("nested", tmp_path / "a" / "nested")]
    return RepoFilter(repos, mode, exclude_dirs=[tmp_path / "a" / "data"])


def test_source_files_pass_and_others_do_not(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    root = str(tmp_path / "a")
    assert f.classify(f"{root}/docs/intro.md") == "file"
    assert f.classify(f"{root}/src/lib.rs") == "file"
    assert f.classify(f"{root}/notes.txt") is None
    assert f.classify(f"{root}/target/debug/x.rs") is None
    assert f.classify(f"{root}/data/doctune_qa.md") is None  # doctune's own output
    assert f.classify(f"{tmp_path}/elsewhere.md") is None


def test_git_internals_pass_only_for_ref_moves(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    root = str(tmp_path / "a")
    assert f.classify(f"{root}/.git/HEAD") == "ref"
    assert f.classify(f"{root}/.git/refs/heads/main") == "ref"
    assert f.classify(f"{root}/.git/packed-refs") == "ref"
    assert f.classify(f"{root}/.git/refs/heads/main.lock") is None
    assert f.classify(f"{root}/.git/index") is None
    assert f.classify(f"{root}/.git/objects/ab/cdef") is None


def test_commits_mode_ignores_worktree_edits(tmp_path: Path) -> None:
    f = _filter(tmp_path, "commits")
    root = str(tmp_path / "a")
    assert f.classify(f"{root}/docs/intro.md") is None
    assert f.classify(f"{root}/.git/HEAD") == "ref"


def test_nested_repo_owns_its_paths(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    found = f.locate(str(tmp_path / "a" / "nested" / "x.md"))
    assert found is not None
    assert (found[0].name, found[1]) == ("nested", "x.md")


def test_group_splits_per_repo_and_escalates_to_rescan(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    a, n = tmp_path / "a", tmp_path / "a" / "nested"
    batch = {
        (Change.modified, f"{a}/one.md"),
        (Change.added, f"{a}/two.rs"),
        (Change.deleted, f"{a}/old.md"),
        (Change.modified, f"{n}/.git/HEAD"),
        (Change.modified, f"{n}/x.md"),
    }
    grouped = {g.repo: g for g in f.group(batch, max_batch=10)}
    assert grouped["a"] == RepoChanges("a", {"one.md", "two.rs", "old.md"}, False, None)
    assert grouped["nested"].rescan
    assert grouped["nested"].reason == "git_ref_changed"
    assert grouped["nested"].paths == set()


def test_gitignore_edit_triggers_rescan_and_refreshes_rules(tmp_path: Path) -> None:
    forgotten: list[bool] = []

    @dataclass
    class IgnoringRepo(SuffixRepo):
        def forget_ignores(self) -> None:
            forgotten.append(True)

    root = tmp_path / "r"
    root.mkdir()
    f = RepoFilter([IgnoringRepo("r", root)], "worktree")
    (only,) = f.group({(Change.modified, f"{root}/docs/.gitignore")}, max_batch=10)
    assert (only.rescan, only.reason) == (True, "gitignore_changed")
    assert forgotten == [True]


def test_oversized_batch_becomes_a_rescan(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    batch = {(Change.added, f"{tmp_path}/a/f{i}.md") for i in range(11)}
    (only,) = f.group(batch, max_batch=10)
    assert only.rescan
    assert only.reason == "batch_over_10"


def test_new_directory_triggers_rescan(tmp_path: Path) -> None:
    f = _filter(tmp_path)
    moved = tmp_path / "a" / "moved_docs"
    moved.mkdir()
    (only,) = f.group({(Change.added, str(moved))}, max_batch=10)
    assert only.rescan
    assert only.reason == "directory_changed"


async def test_real_events_reach_the_callback(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    settings = Settings(
        paths=PathsSettings(state_dir=root / "data", models_dir=tmp_path / "models"),
        watch=WatchSettings(debounce_ms=100),
    )
    seen: list[RepoChanges] = []
    got = anyio.Event()

    async def on_changes(batch: list[RepoChanges]) -> None:
        seen.extend(batch)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_repos, [SuffixRepo("repo", root)], settings, on_changes)
        await anyio.sleep(0.3)  # let inotify watches register
        (root / "data").mkdir()
        (root / "data" / "out.md").write_text("ignored: our own output")
        (root / "scratch.txt").write_text("ignored: not a source file")
        (root / "guide.md").write_text("# Guide\n")
        with anyio.fail_after(10):
            await got.wait()
        tg.cancel_scope.cancel()
    paths = set().union(*(g.paths for g in seen))
    assert paths == {"guide.md"}


def test_new_directory_under_sources_dir_is_a_new_repo(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    (sources / "known").mkdir(parents=True)
    (sources / "fresh").mkdir()
    (sources / ".hidden").mkdir()
    f = RepoFilter([SuffixRepo("known", sources / "known")], "worktree", sources_dir=sources)
    batch = {(Change.added, str(sources / "fresh")), (Change.added, str(sources / ".hidden"))}
    (only,) = f.group(batch, max_batch=10)
    assert (only.repo, only.rescan, only.reason) == ("fresh", True, "new_repo")
