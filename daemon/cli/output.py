"""Human output: names shown safely, text shortened, times in words, paths, two columns."""

from __future__ import annotations

import os
import shutil
import textwrap
import time
import unicodedata
from pathlib import Path
from typing import Any

__all__ = ["ago", "one_line", "printable", "shown_path", "side_by_side"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: Any) -> str:
    """`text` with control, format and line-separator characters escaped (`\\n`, `\\x1b`,
    `\\u202e`), so a file or repository name can neither break a line nor drive the terminal."""
    out = []
    for char in str(text):
        if char in _ESCAPES and char != "\\":
            out.append(_ESCAPES[char])
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def shown_path(path: Path | str) -> str:
    """A path as printed: `..` and `.` segments folded away, then made printable."""
    return printable(os.path.normpath(path))


def ago(at: float | None) -> str:
    """`3 min ago`-style age of a wall-clock timestamp; `never` for None."""
    if at is None:
        return "never"
    seconds = max(0.0, time.time() - at)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def one_line(text: Any, limit: int = 200) -> str:
    """`text` with its whitespace runs folded to single spaces, cut to `limit` characters (…)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def side_by_side(left_title: str, left: str, right_title: str, right: str) -> str:
    """Two answers in two columns (terminal width), wrapped."""
    width = max(60, min(shutil.get_terminal_size((120, 24)).columns, 160))
    col = (width - 3) // 2

    def lines(title: str, text: str) -> list[str]:
        body: list[str] = []
        for para in (text or "(empty answer)").splitlines() or [""]:
            body.extend(textwrap.wrap(para, col) or [""])
        return [title[:col], "─" * min(col, max(len(title), 8)), *body]

    a, b = lines(left_title, left), lines(right_title, right)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x:<{col}} │ {y}".rstrip() for x, y in zip(a, b, strict=True))
