"""Owner locks: a file held under an exclusive flock by the live process it names.

The kernel drops a `flock` when the holder's files are closed, which happens at death and
before the process becomes a zombie. So a lock file that nobody holds belongs to a process
that is gone, whatever its pid says (pids are reused; `kill(pid, 0)` sees zombies as alive).
Used for the daemon's pidfile (daemon/pidfile.py) and each generation run's liveness lock
(pipeline/generate/liveness.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["LockHeld", "OwnerLock", "is_held", "read_pid"]


class LockHeld(RuntimeError):
    """Another live process holds the lock file."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(f"pid {pid or '?'} holds {path}")


class OwnerLock:
    """Hold `path` under an exclusive flock with our pid in it; unlink and unlock on release."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create, lock and write the file; `LockHeld` when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.path, read_pid(self.path)) from None
        os.ftruncate(fd, 0)  # a leftover file may hold a dead process's pid
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Unlink, then unlock (idempotent): a new holder never sees our pid in its file."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OwnerLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def is_held(path: Path, *, remove_stale: bool = False) -> bool | None:
    """True while a live process holds `path`; False for a leftover file nobody holds
    (unlinked first when `remove_stale`); None when there is no file at all."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        # Removing needs the lock exclusively, so nobody can be taking the file meanwhile.
        mode = fcntl.LOCK_EX if remove_stale else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        if remove_stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # unlinked while we hold the lock
        return False
    finally:
        os.close(fd)  # drops our test lock


def read_pid(path: Path) -> int | None:
    """The pid written in the lock file, or None when it is missing or unreadable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
