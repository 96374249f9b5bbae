"""Human output helpers: names shown safely, times and sizes in words, paths normalised."""

from __future__ import annotations

import os
import time
import unicodedata
from pathlib import Path
from typing import Any

__all__ = ["ago", "printable", "shown_path"]

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
