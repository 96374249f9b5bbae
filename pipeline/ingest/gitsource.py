"""Git plumbing for commits mode: HEAD, tree listings and diffs (no worktree content)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TreeEntry", "changed_paths", "head_commit", "is_ancestor_known", "list_tree"]


@dataclass(frozen=True)
class TreeEntry:
    """One path in a commit's tree."""

    path: str
    mode: str
    object_type: str
    object_id: str


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, timeout=120
    ).stdout


def head_commit(root: Path) -> str | None:
    """The commit HEAD points at, or None when `root` is not itself a git checkout's top
    (a directory inside some other repository does not count) or has no commits."""
    try:
        top = _git(root, "rev-parse", "--show-toplevel").decode().strip()
        if not top or Path(top).resolve() != root.resolve():
            return None
        return _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}").decode().strip() or None
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        return None


def is_ancestor_known(root: Path, commit: str) -> bool:
    """Whether `commit` still exists in the repository (history may have been rewritten)."""
    try:
        _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        return False
    return True


def list_tree(root: Path, commit: str) -> list[TreeEntry]:
    """Every blob/link/submodule path in `commit` (recursive)."""
    out = _git(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, object_type, object_id = meta.decode().split()
        entries.append(
            TreeEntry(path.decode("utf-8", "surrogateescape"), mode, object_type, object_id)
        )
    return entries


def changed_paths(root: Path, old: str, new: str) -> dict[str, str]:
    """{path: status letter} between two commits (renames reported as delete + add)."""
    out = _git(root, "diff", "--name-status", "-z", "--no-renames", old, new)
    fields = [f for f in out.split(b"\0") if f]
    changes: dict[str, str] = {}
    for i in range(0, len(fields) - 1, 2):
        changes[fields[i + 1].decode("utf-8", "surrogateescape")] = fields[i].decode()[:1]
    return changes
