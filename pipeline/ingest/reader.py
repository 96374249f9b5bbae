"""Safe reading: regular files inside the repo root only, size cap, binary and UTF-8 checks."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BINARY_SNIFF_BYTES",
    "GitBlobReader",
    "ReadResult",
    "decode_bytes",
    "read_worktree_file",
    "sha256_hex",
]

BINARY_SNIFF_BYTES = 8000  # git's heuristic: a NUL in the first 8000 bytes means binary
_READ_ATTEMPTS = 2


@dataclass
class ReadResult:
    """The outcome of reading one file: text, or a skip reason; always size/mtime when known."""

    ok: bool
    reason: str | None = None
    text: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None
    flags: list[str] = field(default_factory=list)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of raw bytes (the files.content_hash)."""
    return hashlib.sha256(data).hexdigest()


def _kind_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special"


def decode_bytes(data: bytes, size: int | None, mtime_ns: int | None) -> ReadResult:
    """Binary sniff + UTF-8 decoding (replacement characters, flagged) for raw content."""
    digest = sha256_hex(data)
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return ReadResult(False, "binary", size=size, mtime_ns=mtime_ns, content_hash=digest)
    flags: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        flags.append("invalid_utf8")
    return ReadResult(True, None, text, size, mtime_ns, digest, flags)


def read_worktree_file(
    root: Path, rel_path: str, max_bytes: int, *, known_hash: str | None = None
) -> ReadResult:
    """Read `root/rel_path` if it is a regular file whose real path stays inside `root`.

    Never follows a path out of the repo, never opens FIFOs/devices (O_NONBLOCK guards
    against a swap between stat and open), never reads more than `max_bytes + 1`.
    A file that changes while being read is retried once, then skipped.
    When `known_hash` equals the content's hash the text is not decoded (ok, text "").
    """
    path = root / rel_path
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return ReadResult(False, "vanished")
    except OSError as exc:
        return ReadResult(False, f"stat_error:{errno.errorcode.get(exc.errno or 0, exc)}")
    target = path
    if stat.S_ISLNK(lst.st_mode):
        try:
            target = path.resolve(strict=True)
        except RuntimeError:
            return ReadResult(False, "symlink_loop")
        except FileNotFoundError:
            return ReadResult(False, "dangling_symlink")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return ReadResult(False, "symlink_loop")
            return ReadResult(False, f"stat_error:{errno.errorcode.get(exc.errno or 0, exc)}")
        if not target.is_relative_to(root):
            return ReadResult(False, "symlink_outside_repo")
    for _ in range(_READ_ATTEMPTS):
        result = _read_once(target, max_bytes, known_hash)
        if result.reason != "changed_during_read":
            return result
    return result


def _read_once(path: Path, max_bytes: int, known_hash: str | None) -> ReadResult:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ReadResult(False, "vanished")
    except OSError as exc:
        return ReadResult(False, f"stat_error:{errno.errorcode.get(exc.errno or 0, exc)}")
    if not stat.S_ISREG(st.st_mode):
        return ReadResult(False, f"not_regular_file:{_kind_name(st.st_mode)}")
    if st.st_size > max_bytes:
        return ReadResult(False, "too_large", size=st.st_size, mtime_ns=st.st_mtime_ns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return ReadResult(False, "vanished")
    except OSError as exc:
        return ReadResult(False, f"open_error:{errno.errorcode.get(exc.errno or 0, exc)}")
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return ReadResult(False, f"not_regular_file:{_kind_name(before.st_mode)}")
        chunks: list[bytes] = []
        # One byte past the stat'ed size is enough to notice a writer still appending.
        remaining = min(max_bytes, before.st_size) + 1
        while remaining > 0:
            block = os.read(fd, min(remaining, 1 << 20))
            if not block:
                break
            chunks.append(block)
            remaining -= len(block)
        after = os.fstat(fd)
    except OSError as exc:
        return ReadResult(False, f"read_error:{errno.errorcode.get(exc.errno or 0, exc)}")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        return ReadResult(False, "too_large", size=len(data), mtime_ns=after.st_mtime_ns)
    if (
        after.st_mtime_ns != before.st_mtime_ns
        or after.st_size != before.st_size
        or len(data) != after.st_size
    ):
        return ReadResult(False, "changed_during_read", size=after.st_size)
    if known_hash is not None and sha256_hex(data) == known_hash:
        return ReadResult(True, None, "", len(data), after.st_mtime_ns, known_hash)
    return decode_bytes(data, len(data), after.st_mtime_ns)


class GitBlobReader:
    """Reads file contents as committed, via one long-lived `git cat-file --batch`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._proc = subprocess.Popen(
            ["git", "-C", str(root), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def read(self, object_name: str, max_bytes: int) -> tuple[bytes | None, int, str | None]:
        """(content or None when over the cap, size, error) for a blob id or `rev:path`."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(object_name.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) < 3:
            return None, 0, "missing_in_commit"
        size = int(header[2])
        if header[1] != "blob" or size > max_bytes:
            # The pipe must be drained either way; never hold an oversized blob in memory.
            remaining = size + 1  # + the LF after each object
            while remaining > 0:
                remaining -= len(
                    self._proc.stdout.read(min(remaining, 1 << 20)) or b"x" * remaining
                )
            reason = f"not_a_blob:{header[1]}" if header[1] != "blob" else "too_large"
            return None, size, reason
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the LF after each object
        return data, size, None

    def close(self) -> None:
        """Close the pipe and reap the git process."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait(timeout=10)
