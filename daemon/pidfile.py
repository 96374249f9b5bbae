"""The daemon's pidfile: an owner lock (pipeline/owner_lock.py), so a stale file never misleads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

from pipeline.owner_lock import LockHeld, OwnerLock, is_held, read_pid
from pipeline.settings import Settings

__all__ = [
    "PIDFILE_NAME",
    "POINTER_NAME",
    "DaemonAlreadyRunning",
    "PidFile",
    "daemon_pidfile",
    "pidfile_candidates",
    "read_running_pid",
    "runtime_dir",
]

PIDFILE_NAME = "doctune.pid"
# In state_dir: where a daemon whose runtime dir is elsewhere ($RUNTIME_DIRECTORY under the
# shipped unit) put its pidfile, so `doctune retrain` run outside the unit still finds it.
POINTER_NAME = "doctune.runtime_dir"


class DaemonAlreadyRunning(RuntimeError):
    """Another daemon holds the pidfile lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(f"another doctune daemon (pid {pid or '?'}) holds {path}")


def runtime_dir(settings: Settings, environ: dict[str, str] | None = None) -> Path:
    """paths.runtime_dir, else systemd's $RUNTIME_DIRECTORY (first entry), else state_dir."""
    if settings.paths.runtime_dir is not None:
        return settings.paths.runtime_dir
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) if runtime else settings.paths.state_dir


def pidfile_path(settings: Settings) -> Path:
    """Where this process, as the daemon, writes its pid."""
    return runtime_dir(settings) / PIDFILE_NAME


def pidfile_candidates(settings: Settings, environ: dict[str, str] | None = None) -> list[Path]:
    """Where a running daemon's pidfile may be: our runtime dir, then the one it recorded."""
    paths = [runtime_dir(settings, environ) / PIDFILE_NAME]
    if settings.paths.runtime_dir is None:
        try:
            recorded = (settings.paths.state_dir / POINTER_NAME).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            recorded = ""
        if recorded.strip() and Path(recorded.strip()) / PIDFILE_NAME not in paths:
            paths.append(Path(recorded.strip()) / PIDFILE_NAME)
    return paths


def daemon_pidfile(settings: Settings) -> tuple[Path, int | None]:
    """The pidfile of the running daemon and its pid; (first candidate, None) when none runs."""
    candidates = pidfile_candidates(settings)
    for path in candidates:
        pid = read_running_pid(path)
        if pid is not None:
            return path, pid
    return candidates[0], None


class PidFile:
    """Hold the pidfile's owner lock on enter (and record its directory); release on exit.

    The lock lives as long as the process: if the daemon dies the kernel drops it, so
    `read_running_pid` can tell a live daemon from a leftover file without guessing.
    """

    def __init__(self, path: Path, *, pointer_dir: Path | None = None) -> None:
        self.path = path
        # the state dir, where the pidfile's directory is recorded when it is elsewhere
        self.pointer = None
        if pointer_dir is not None and pointer_dir.resolve() != path.parent.resolve():
            self.pointer = pointer_dir / POINTER_NAME
        self._lock = OwnerLock(path)

    def __enter__(self) -> PidFile:
        try:
            self._lock.acquire()
        except LockHeld as exc:
            raise DaemonAlreadyRunning(self.path, exc.pid) from None
        if self.pointer is not None:
            self.pointer.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.pointer.with_suffix(".tmp")
            tmp.write_text(f"{self.path.parent.resolve()}\n", encoding="utf-8")
            tmp.replace(self.pointer)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.pointer is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pointer.unlink()
        self._lock.release()


def read_running_pid(path: Path) -> int | None:
    """The pid of the daemon holding `path`, or None when no live daemon holds it."""
    return read_pid(path) if is_held(path) else None
