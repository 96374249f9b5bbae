"""The claim loop of a generation run: keep every free slot busy with a leased job.

Jobs are claimed in batches of about two rounds (PREFETCH_ROUNDS): fewer, larger claim
transactions leave the write lock to the commits, which a slot waits for before its next
call. Prefetched jobs never sent are given back, nothing spent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from pipeline.clients.errors import GeneratorUnavailable
from pipeline.generate.control import RunControl
from pipeline.generate.endpoints import Endpoint
from pipeline.generate.pool import EndpointPool
from pipeline.settings import GeneratorSettings
from state import job_claims
from state.db import Database, now
from state.job_claims import ClaimedJob
from state.job_outcomes import JobOutcome, apply_outcomes

__all__ = ["IDLE_POLL_S", "PREFETCH_ROUNDS", "ClaimLoop"]

IDLE_POLL_S = 5.0
PREFETCH_ROUNDS = 2  # leased-but-unsent jobs kept ready, in multiples of the concurrency

StartJob = Callable[[ClaimedJob, Endpoint], object]


class ClaimLoop:
    """Claims jobs of one prompt version and model for `owner` and hands them to `start_job`."""

    def __init__(
        self,
        db: Database,
        gen: GeneratorSettings,
        prompt_version: str,
        owner: str,
        pool: EndpointPool,
        control: RunControl,
    ) -> None:
        self.db = db
        self.gen = gen
        self.prompt_version = prompt_version
        self.owner = owner
        self.pool = pool
        self.control = control
        self._ready: deque[ClaimedJob] = deque()
        self._all_down_since: float | None = None

    async def run(self, start_job: StartJob, support: TaskGroup) -> None:
        """Until stopped, failed, or (`once`) the queue is drained; probes go to `support`."""
        try:
            while not self.control.halted:
                event = self.control.notifier.current
                self.pool.probe_open(support)
                if self._gave_up():
                    return
                self._hand_out(start_job)
                in_flight = self.pool.in_flight
                want = (1 + PREFETCH_ROUNDS) * self.pool.usable - in_flight - len(self._ready)
                if want > 0 and (
                    want >= self.pool.usable * PREFETCH_ROUNDS // 2
                    or (self.pool.free and not self._ready)
                ):
                    if await self._claim(want):
                        continue
                    wait_s = await self._idle_wait_s(in_flight)
                    if wait_s is None:
                        return
                    await self.control.notifier.wait(event, wait_s)
                    continue
                await self.control.notifier.wait(event, IDLE_POLL_S)
        finally:
            if self._ready:  # prefetched but never sent: give them back, nothing spent
                with anyio.CancelScope(shield=True):
                    await apply_outcomes(
                        self.db,
                        [JobOutcome(j.id, j.claim_token, "release") for j in self._ready],
                    )

    def _hand_out(self, start_job: StartJob) -> None:
        while self._ready and (target := self.pool.free_endpoint()) is not None:
            target.in_flight += 1
            start_job(self._ready.popleft(), target)

    async def _claim(self, want: int) -> bool:
        jobs = await job_claims.claim_jobs(
            self.db,
            prompt_version=self.prompt_version,
            model=self.gen.model,
            owner=self.owner,
            limit=want,
            lease_s=self.gen.lease_s,
        )
        self._ready.extend(jobs)
        return bool(jobs)

    async def _idle_wait_s(self, in_flight: int) -> float | None:
        """How long to wait for the next due job; None when `once` has nothing left to do."""
        due = await job_claims.next_due_at(
            self.db, prompt_version=self.prompt_version, model=self.gen.model
        )
        if self.control.once and due is None and in_flight == 0 and not self._ready:
            return None
        wait_s = IDLE_POLL_S if due is None else min(IDLE_POLL_S, due - now())
        return max(wait_s, 0.02)

    def _gave_up(self) -> bool:
        """In `run --once`, give up when every endpoint stayed down for `outage_give_up_s`."""
        if not self.pool.all_down():
            self._all_down_since = None
            return False
        if self._all_down_since is None:
            self._all_down_since = time.monotonic()
        give_up_s = self.gen.outage_give_up_s
        if self.control.once and time.monotonic() - self._all_down_since >= give_up_s:
            errors = "; ".join(ep.breaker.last_error for ep in self.pool.endpoints)
            self.control.fail(
                GeneratorUnavailable(f"generator unreachable for {give_up_s:.0f}s: {errors}")
            )
            return True
        return False
