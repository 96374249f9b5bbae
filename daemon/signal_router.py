"""The signal router: SIGTERM/SIGINT → drain (a second one hurries it), SIGHUP → reload,
SIGUSR1 → retrain request. It decides which, the daemon's parts do the work."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import structlog

__all__ = ["SignalRouter"]

log = structlog.get_logger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class SignalRouter:
    """Receives the process's signals on the event loop and calls one handler for each.

    Once a drain has started, a second SIGTERM/SIGINT calls `hurry` and every other signal
    is ignored (logged): a draining daemon neither reloads nor starts a retrain.
    """

    def __init__(
        self,
        *,
        drain: Callable[[str], Coroutine[Any, Any, None]],
        hurry: Callable[[], None],
        reload: Callable[[], Awaitable[object]],
        retrain: Callable[[], None],
    ) -> None:
        self._drain = drain
        self._hurry = hurry
        self._reload = reload
        self._retrain = retrain
        self.draining = False

    async def run(self) -> None:
        """Route signals until cancelled; the drain runs beside it, so signals still arrive."""
        with anyio.open_signal_receiver(*SIGNALS) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        if self.draining:
                            log.warning("drain_hurried", signal=name)
                            self._hurry()
                        else:
                            self.draining = True
                            tg.start_soon(self._drain, name)
                    elif self.draining:
                        log.info("signal_ignored_while_draining", signal=name)
                    elif signum == signal.SIGHUP:
                        await self._reload()
                    elif signum == signal.SIGUSR1:
                        self._retrain()
