"""Whether a generation run goes on: a stop request, a fatal error, and the claim loop's wake-up."""

from __future__ import annotations

import anyio

from pipeline.clients.errors import GeneratorError

__all__ = ["Notifier", "RunControl"]


class Notifier:
    """A re-armable wake-up: take `current` before checking state, then wait on it."""

    def __init__(self) -> None:
        self.current = anyio.Event()

    def notify(self) -> None:
        self.current.set()
        self.current = anyio.Event()

    @staticmethod
    async def wait(event: anyio.Event, timeout_s: float) -> None:
        with anyio.move_on_after(max(0.0, timeout_s)):
            await event.wait()


class RunControl:
    """Shared by the parts of one run: `stop()` (claim nothing more), `fail()` (a fatal error
    ends the run), `wake()` (look at the queue now); `once` is `run --once`."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self.stopping = False
        self.fatal: GeneratorError | None = None
        self.once = True

    @property
    def halted(self) -> bool:
        """Stop claiming: a stop was asked for, or the run failed."""
        return self.stopping or self.fatal is not None

    def stop(self) -> None:
        self.stopping = True
        self.notifier.notify()

    def wake(self) -> None:
        self.notifier.notify()

    def fail(self, error: GeneratorError) -> bool:
        """Record the run's fatal error; True when it is the first (later ones are kept out)."""
        if self.fatal is not None:
            return False
        self.fatal = error
        return True
