"""The one writer of a generation run: job outcomes committed in batches, one transaction each.

A job keeps its slot until `submit` returns, that is until its outcome is committed, so a crash
can repeat at most `concurrency` LLM calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from state.db import Database
from state.job_outcomes import JobOutcome, apply_outcomes

__all__ = ["WRITER_BATCH", "OutcomeWriter"]

WRITER_BATCH = 256


@dataclass
class _Pending:
    outcome: JobOutcome
    done: anyio.Event = field(default_factory=anyio.Event)
    applied: bool = False
    error: BaseException | None = None


class OutcomeWriter:
    """`submit` from any worker; `run` (one task) commits whatever has arrived, in batches."""

    def __init__(self, db: Database, on_batch: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_batch = on_batch
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](WRITER_BATCH * 4)

    async def submit(self, outcome: JobOutcome) -> bool:
        """Commit `outcome`; False when the job's lease was lost (another run owns it now)."""
        pending = _Pending(outcome)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.applied

    async def run(self) -> None:
        """Commit outcomes as they arrive: one transaction for whatever is waiting."""
        async with self._receive as receive:
            async for first in receive:
                batch = [first]
                while len(batch) < WRITER_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                try:
                    results = await apply_outcomes(self.db, [b.outcome for b in batch])
                except Exception as exc:
                    for item in batch:
                        item.error = exc
                        item.done.set()
                    raise
                for item, applied in zip(batch, results, strict=True):
                    item.applied = applied
                    item.done.set()
                if self.on_batch is not None:
                    self.on_batch()
