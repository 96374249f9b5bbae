"""Recent call health: `ok`, `degraded` (some recent calls failed) or `failing` (most did)."""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["CallHealth"]

WINDOW = 20  # the calls that count as "recent"
FAILING_FRACTION = 0.5


class CallHealth:
    """The outcome of the last WINDOW generator calls (a reply at all, not a valid one)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._recent: deque[bool] = deque(maxlen=window)
        self.last_error = ""

    def record_success(self) -> None:
        self._recent.append(True)

    def record_failure(self, error: str) -> None:
        self._recent.append(False)
        self.last_error = error

    @property
    def failures(self) -> int:
        return sum(1 for ok in self._recent if not ok)

    def state(self) -> str:
        """`failing` when at least half the recent calls failed, `degraded` when any did."""
        if not self._recent or not self.failures:
            return "ok"
        if self.failures >= FAILING_FRACTION * len(self._recent):
            return "failing"
        return "degraded"

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state(),
            "recent_calls": len(self._recent),
            "recent_failures": self.failures,
            "last_error": self.last_error or None,
        }
