"""Repository discovery and file selection: anchored globs, .gitignore, never-read dirs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pathspec

from pipeline.ingest.globs import GlobSet
from pipeline.settings import ALWAYS_EXCLUDED_DIRS, Settings

__all__ = ["Candidate", "Kind", "Repo", "discover_repos", "language_for", "walk_repo"]

Kind = Literal["doc", "code"]

_LANGUAGES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".rs": "rust",
    ".py": "python",
    ".pyi": "python",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
}


def language_for(rel_path: str) -> str:
    """The parser language for a path, by extension ('text' when unknown)."""
    return _LANGUAGES.get(os.path.splitext(rel_path)[1].lower(), "text")


@dataclass
class Repo:
    """One watched repository with its compiled selection rules."""

    name: str
    root: Path
    docs: list[str]
    code: list[str]
    exclude: list[str]
    _docs: GlobSet = field(init=False, repr=False)
    _code: GlobSet = field(init=False, repr=False)
    _exclude: GlobSet = field(init=False, repr=False)
    # rel dir -> (.gitignore mtime_ns or None when absent, compiled rules)
    _ignores: dict[str, tuple[int | None, pathspec.PathSpec | None]] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._docs = GlobSet(self.docs)
        self._code = GlobSet(self.code)
        self._exclude = GlobSet(self.exclude)

    def classify(self, rel_path: str) -> Kind | None:
        """'doc' / 'code' by the globs alone (no .gitignore, no filesystem access)."""
        parts = rel_path.split("/")
        if any(p in ALWAYS_EXCLUDED_DIRS for p in parts[:-1]) or self._exclude.matches(rel_path):
            return None
        if self._docs.matches(rel_path):
            return "doc"
        if self._code.matches(rel_path):
            return "code"
        return None

    def matches(self, rel_path: str) -> Kind | None:
        """'doc' / 'code' when doctune ingests this path, else None (cheap; for watchers).

        Safe on a long-lived Repo: .gitignore files are re-checked by mtime.
        """
        kind = self.classify(rel_path)
        if kind is None or self.is_ignored(rel_path, validate=True):
            return None
        return kind

    def may_contain(self, rel_dir: str) -> bool:
        """False when no selected file can live below this directory."""
        if rel_dir.split("/")[-1] in ALWAYS_EXCLUDED_DIRS:
            return False
        return self._docs.may_contain(rel_dir) or self._code.may_contain(rel_dir)

    def is_ignored(self, rel_path: str, *, is_dir: bool = False, validate: bool = False) -> bool:
        """Whether .gitignore files (root and nested) exclude this path.

        Deeper .gitignore files override shallower ones, as in git; an excluded
        directory excludes everything below it.
        """
        parts = rel_path.split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            sub_is_dir = is_dir or depth < len(parts)
            if self._ignored_here(sub, sub_is_dir, validate):
                return True
        return False

    def _ignored_here(self, rel_path: str, is_dir: bool, validate: bool = False) -> bool:
        parts = rel_path.split("/")
        verdict: bool | None = None
        for depth in range(len(parts)):
            spec = self._ignore_spec("/".join(parts[:depth]), validate)
            if spec is None:
                continue
            local = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(local)
            if result.include is not None:
                verdict = bool(result.include)
        return bool(verdict)

    def _ignore_spec(self, rel_dir: str, validate: bool = False) -> pathspec.PathSpec | None:
        cached = self._ignores.get(rel_dir)
        if cached is not None and not validate:
            return cached[1]
        path = self.root / rel_dir / ".gitignore" if rel_dir else self.root / ".gitignore"
        try:
            mtime: int | None = os.stat(path).st_mtime_ns
        except OSError:
            mtime = None
        if cached is not None and cached[0] == mtime:
            return cached[1]
        spec = None
        if mtime is not None:
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            spec = pathspec.GitIgnoreSpec.from_lines(lines)
        self._ignores[rel_dir] = (mtime, spec)
        return spec

    def forget_ignores(self) -> None:
        """Drop cached .gitignore rules (call when a .gitignore changed)."""
        self._ignores.clear()


@dataclass(frozen=True)
class Candidate:
    """A path the walk selected, with its lstat (None when it could not be stat'ed)."""

    rel_path: str
    kind: Kind
    st: os.stat_result | None


def discover_repos(settings: Settings) -> list[Repo]:
    """Every subdirectory of `sources.dir` is a repo; `[[sources.repo]]` entries override/add."""
    src = settings.sources
    repos: dict[str, Repo] = {}
    if src.dir is not None and src.dir.is_dir():
        for entry in sorted(src.dir.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                repos[entry.name] = Repo(
                    entry.name, entry.resolve(), list(src.docs), list(src.code), list(src.exclude)
                )
    for spec in src.repo:
        repos[spec.name] = Repo(
            spec.name,
            spec.path.resolve(),
            list(spec.docs),
            list(spec.code),
            list(src.exclude) + list(spec.exclude),
        )
    return [repos[name] for name in sorted(repos)]


def walk_repo(repo: Repo, start: str = "") -> Iterator[Candidate]:
    """Yield every selected path below the repo root (or `start`, a repo-relative
    directory) without following symlinked dirs.

    Symlinks, FIFOs and devices are yielded too (with their lstat) so the reader can
    record why they were skipped; directories doctune never reads are pruned.
    """
    stack = [start.strip("/")]
    while stack:
        rel_dir = stack.pop()
        abs_dir = repo.root / rel_dir if rel_dir else repo.root
        try:
            entries = list(os.scandir(abs_dir))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                # Parents were already checked on the way down: test this level only.
                if repo.may_contain(rel) and not repo._ignored_here(rel, True):
                    stack.append(rel)
                continue
            kind = repo.classify(rel)
            if kind is None or repo._ignored_here(rel, False):
                continue
            yield Candidate(rel, kind, st)
