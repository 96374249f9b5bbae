"""Run liveness: each generation run holds a flock'd lock file that the kernel drops at death.

A lease's claim token starts with its owner (`host:pid:random`). `os.kill(pid, 0)` cannot
tell a dead owner from a dying one or an unreaped zombie, and a pid can be reused; a lock
held with `flock` is released by the kernel when the process's files are closed, which
happens before it becomes a zombie. So an owner whose lock file is not locked is gone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pipeline.owner_lock import OwnerLock, is_held

__all__ = ["LOCKS_DIRNAME", "owner_alive", "owner_lock"]

LOCKS_DIRNAME = "owners"  # under paths.state_dir: every run sharing the database sees it


def _lock_path(locks_dir: Path, owner: str) -> Path:
    return locks_dir / (owner.replace(":", "_").replace("/", "_") + ".lock")


def owner_lock(locks_dir: Path, owner: str) -> OwnerLock:
    """The lock a run holds for its lifetime: `<locks_dir>/<owner>.lock` (owner names are
    unique, so acquiring it never finds it held)."""
    return OwnerLock(_lock_path(locks_dir, owner))


def owner_alive(locks_dir: Path, owner: str) -> bool:
    """False only when `owner` ran on this host and is gone; True when it cannot be known.

    The owner's lock file decides: locked means alive; unlocked means its holder died (the
    file is removed then). An owner without a lock file (a run of an older doctune) falls back
    to its pid: gone, or a zombie, means dead.
    """
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return True  # another machine's run: only its lease expiry can tell
    held = is_held(_lock_path(locks_dir, owner), remove_stale=True)
    if held is None:
        return _pid_alive(rest.split(":", 1)[0])
    return held


def _pid_alive(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return True
    if not Path("/proc/self/stat").exists():  # no procfs: a signal 0 is all we can ask
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = Path(f"/proc/{pid_text}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # the state letter follows the parenthesised command name: Z = zombie, X = dead
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
