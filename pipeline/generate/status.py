"""The generator's state for `doctune status`: written to `meta` only when it changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from state.db import Database
from state.generation_status import set_generator_status

__all__ = ["StatusPublisher"]


class StatusPublisher:
    """Publishes `state` + `message` with what `context()` says (model, backend, endpoints)."""

    def __init__(self, db: Database, context: Callable[[], dict[str, Any]]) -> None:
        self.db = db
        self.context = context
        self._published: str | None = None

    @property
    def shows_trouble(self) -> bool:
        """Something other than `ok` is published (a success should refresh it)."""
        return self._published is not None and not self._published.startswith("ok|")

    async def publish(self, state: str, message: str) -> None:
        key = f"{state}|{message}"
        if key == self._published:
            return
        self._published = key
        with anyio.CancelScope(shield=True):
            await set_generator_status(
                self.db, {"state": state, "message": message, **self.context()}
            )
