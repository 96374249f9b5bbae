"""One claimed job on one endpoint: call the LLM, judge the reply, store the outcome.

Each job runs in its own task, outside any transaction; it keeps its endpoint slot until its
outcome is committed by the run's one writer.
"""

from __future__ import annotations

import time

import anyio

from pipeline.clients.errors import GeneratorError, OutageError, RetryableError
from pipeline.generate.control import RunControl
from pipeline.generate.endpoints import Endpoint
from pipeline.generate.engine import EmbeddedEngine
from pipeline.generate.latency import CallLatency
from pipeline.generate.logcontext import job_context
from pipeline.generate.pool import EndpointPool
from pipeline.generate.summary import Tally
from pipeline.generate.validate import DuplicateIndex
from pipeline.generate.worker import (
    outcome_for_error,
    outcome_for_no_span,
    outcome_for_reply,
    request_for,
)
from pipeline.generate.writer import OutcomeWriter
from pipeline.settings import GeneratorSettings
from state.db import Database
from state.job_claims import ClaimedJob
from state.job_outcomes import JobOutcome, apply_outcomes

__all__ = ["JobCalls"]


class JobCalls:
    """The per-job step of a run (`work`), sharing the run's writer, pool and counters."""

    def __init__(
        self,
        db: Database,
        gen: GeneratorSettings,
        prompt_version: str,
        *,
        pool: EndpointPool,
        writer: OutcomeWriter,
        tally: Tally,
        latency: CallLatency,
        index: DuplicateIndex,
        control: RunControl,
        engine: EmbeddedEngine | None,
    ) -> None:
        self.db = db
        self.gen = gen
        self.prompt_version = prompt_version
        self.pool = pool
        self.writer = writer
        self.tally = tally
        self.latency = latency
        self.index = index
        self.control = control
        self.engine = engine

    async def work(self, job: ClaimedJob, ep: Endpoint) -> None:
        """Call, judge, commit; the slot on `ep` is freed when the outcome is stored."""
        # Each worker runs in its own task (its own contextvars copy): every log line emitted
        # while handling this job carries its id, chunk hash and attempt number.
        with job_context(job.id, job.chunk_id, job.attempts + job.repairs + 1):
            try:
                outcome, handles = await self._call(job, ep)
                applied = await self.writer.submit(outcome)
                self.tally.count(outcome, applied)
                if not applied:
                    for handle in handles:
                        self.index.remove(job.repo, handle)
            except anyio.get_cancelled_exc_class():
                # Give the job back so a stop does not leave it leased until the lease runs out.
                with anyio.CancelScope(shield=True):
                    await apply_outcomes(
                        self.db,
                        [JobOutcome(job.id, job.claim_token, "release", "outage", "cancelled")],
                    )
                raise
            finally:
                ep.in_flight -= 1
                self.control.wake()

    async def _call(self, job: ClaimedJob, ep: Endpoint) -> tuple[JobOutcome, list[int]]:
        request = request_for(job, self.gen)
        if request.passages == []:
            return outcome_for_no_span(job), []
        summary = self.tally.summary
        ep.calls += 1
        summary.calls += 1
        engine_pid = self.engine.pid_now() if self.engine else None
        started = time.perf_counter()
        try:
            completion = await ep.client.complete(request.messages, request.schema)
        except GeneratorError as exc:
            self.latency.observe("error", time.perf_counter() - started)
            exc = await self._blame_engine(exc, engine_pid)
            await self.pool.record_failure(ep, exc)
            return outcome_for_error(job, exc, self.gen), []
        self.latency.observe("ok", time.perf_counter() - started)
        await self.pool.record_success(ep)
        summary.prompt_tokens += completion.prompt_tokens or 0
        summary.completion_tokens += completion.completion_tokens or 0
        return outcome_for_reply(
            job, completion, self.gen, self.prompt_version, self.index, request.passages
        )

    async def _blame_engine(self, exc: GeneratorError, engine_pid: int | None) -> GeneratorError:
        """A request that kills the embedded engine must spend attempts, or it would loop."""
        if isinstance(exc, OutageError) and self.engine and await self.engine.died(engine_pid):
            return RetryableError(
                f"the embedded engine died on this request: {exc.detail}", reason="engine_crashed"
            )
        return exc
