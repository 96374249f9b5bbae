"""The systemd watchdog: WATCHDOG=1 pings sent from the event loop at half WATCHDOG_USEC."""

from __future__ import annotations

import anyio

from daemon.systemd_notify import Notifier

__all__ = ["Watchdog"]


class Watchdog:
    """Pings from the event loop itself: a wedged loop stops the pings and systemd restarts us.

    Does nothing when systemd asked for no watchdog (no WATCHDOG_USEC, or it is another
    process's).
    """

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def run(self) -> None:
        """Ping until cancelled (returns at once when there is no watchdog)."""
        interval_s = self._notifier.watchdog_interval_s()
        if interval_s is None:
            return
        while True:
            self._notifier.watchdog()
            await anyio.sleep(interval_s)
