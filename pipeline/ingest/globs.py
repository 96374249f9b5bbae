"""Anchored path globs: `*` stays inside one path segment, `**` spans any number of them."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["GlobSet", "glob_to_regex"]


def glob_to_regex(pattern: str) -> str:
    """Translate a repo-relative glob to a regex anchored at the repository root.

    Unlike gitignore patterns, `*.rs` means "in the root" (the seed's default), while
    `**/*.rs` means anywhere; `datafusion/*/src/**/*.rs` works as a user expects.
    """
    pattern = pattern.strip().lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            ch = pattern[i]
            if ch == "*":
                out.append("[^/]*")
            elif ch == "?":
                out.append("[^/]")
            elif ch == "[":
                end = pattern.find("]", i + 1)
                if end == -1:
                    out.append(re.escape(ch))
                else:
                    body = pattern[i + 1 : end].replace("\\", "\\\\")
                    if body.startswith("!"):
                        body = "^" + body[1:]
                    out.append(f"[{body}]")
                    i = end
            else:
                out.append(re.escape(ch))
            i += 1
    return "".join(out)


class GlobSet:
    """A compiled union of anchored globs, matched against POSIX relative paths."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [p for p in patterns if p.strip()]
        if self.patterns:
            joined = "|".join(f"(?:{glob_to_regex(p)})" for p in self.patterns)
            self._regex: re.Pattern[str] | None = re.compile(f"^(?:{joined})$")
        else:
            self._regex = None
        # Directory prefixes that could contain a match let the walk prune early.
        self._dir_prefixes = [_static_prefix(p) for p in self.patterns]

    def matches(self, rel_path: str) -> bool:
        """True when the path matches one of the globs."""
        return self._regex is not None and self._regex.match(rel_path) is not None

    def may_contain(self, rel_dir: str) -> bool:
        """False only when no glob can match anything below `rel_dir` (cheap prune)."""
        if not self.patterns:
            return False
        rel_dir = rel_dir.rstrip("/") + "/"
        for prefix, wild in self._dir_prefixes:
            if wild and (rel_dir.startswith(prefix) or prefix.startswith(rel_dir)):
                return True
            if not wild and prefix.startswith(rel_dir):
                return True
        return False


def _static_prefix(pattern: str) -> tuple[str, bool]:
    """The literal directory part before the first wildcard, and whether a `**` follows.

    Returns (prefix, deep): `deep` is True when the pattern can reach arbitrarily deep
    below `prefix`; otherwise `prefix` is the longest literal leading directory path.
    """
    pattern = pattern.strip().lstrip("/")
    parts = pattern.split("/")
    literal: list[str] = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            # A single-segment wildcard directory: anything at that depth may match.
            return ("/".join(literal) + "/" if literal else "", True)
        literal.append(part)
    return ("/".join(literal) + "/" if literal else "", False)
