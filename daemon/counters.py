"""The daemon's event counters and last-seen facts: parts record, /status and /metrics read."""

from __future__ import annotations

from typing import Any

__all__ = ["COUNTER_NAMES", "DaemonCounters"]

# Every counter the daemon keeps (daemon/metrics.py exports each as doctune_<name>_total).
COUNTER_NAMES = (
    "reconciles",
    "reconcile_errors",
    "watch_batches",
    "watch_paths",
    "watch_rescans",
    "watch_failures",
    "new_jobs",
    "reloads",
    "reload_errors",
)


class DaemonCounters:
    """Counts that only grow (since the process started) and the last fact of each kind.

    Parts get this object to record into; nothing reads it back to decide anything, so it
    carries no state between parts. The status publisher copies both out for /status.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._last: dict[str, Any] = {}

    def add(self, name: str, n: int = 1) -> None:
        """Count `n` more of `name` (one of COUNTER_NAMES)."""
        if name not in self._counts:
            raise KeyError(f"unknown daemon counter {name!r}")
        self._counts[name] += n

    def note(self, key: str, value: Any) -> None:
        """Remember the last `key` (an error, a reconcile's summary, when a change came)."""
        self._last[key] = value

    def forget(self, key: str) -> None:
        """Drop a remembered fact that no longer holds (e.g. a reload error after a good one)."""
        self._last.pop(key, None)

    def noted(self, key: str) -> bool:
        """Whether `key` is currently remembered."""
        return key in self._last

    def counts(self) -> dict[str, int]:
        """A copy of every counter."""
        return dict(self._counts)

    def last(self) -> dict[str, Any]:
        """A copy of every remembered fact."""
        return dict(self._last)
