"""GenerationService: bounded concurrent workers that drain the job queue into pairs.

A dispatcher claims as many jobs as there are free slots (per endpoint, breakers closed),
each job runs in its own task (LLM call outside any transaction), and its outcome goes to
one writer that commits batches in single transactions. A job keeps its slot until its
outcome is committed, so a crash can repeat at most `concurrency` LLM calls.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from pipeline.generate.backend import (
    EMBEDDED_CONCURRENCY,
    ResolvedBackend,
    embedded_spec,
    resolve_backend,
)
from pipeline.generate.endpoints import Endpoint, build_endpoints, embedded_endpoint
from pipeline.generate.errors import (
    ConfigurationError,
    GeneratorError,
    GeneratorUnavailable,
    ModelMissingError,
    OutageError,
    RetryableError,
)
from pipeline.generate.export import JsonlExporter
from pipeline.generate.health import CallHealth
from pipeline.generate.http import open_session
from pipeline.generate.latency import CallLatency
from pipeline.generate.liveness import LOCKS_DIRNAME, owner_alive, owner_lock
from pipeline.generate.logcontext import job_context
from pipeline.generate.prompt import prompt_version_for
from pipeline.generate.validate import DuplicateIndex
from pipeline.generate.worker import (
    outcome_for_error,
    outcome_for_no_span,
    outcome_for_reply,
    request_for,
)
from pipeline.llamacpp import LlamaServer, LlamaServerError
from pipeline.settings import Settings
from state import jobs as state_jobs
from state.db import Database, now
from state.jobs import ClaimedJob, JobOutcome
from state.pairs import repo_questions

__all__ = ["GenerationService", "RunOnceSummary"]

log = structlog.get_logger(__name__)

IDLE_POLL_S = 5.0
WRITER_BATCH = 256
PREFETCH_ROUNDS = 2  # leased-but-unsent jobs kept ready, in multiples of the concurrency
RECLAIM_INTERVAL_S = 2.0  # how often a running service frees leases of dead runs


@dataclass
class RunOnceSummary:
    """What one drain did."""

    calls: int = 0
    pairs_stored: int = 0
    jobs_done: int = 0
    retries: int = 0
    repairs: int = 0
    dead: int = 0
    released: int = 0
    lost_leases: int = 0
    orphans_released: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    engine_start_s: float = 0.0  # embedded engine: spawn until it answered
    exported_repos: list[str] = field(default_factory=list)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs_stored / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pairs_per_s": round(self.pairs_per_s, 3)}


@dataclass
class _Pending:
    outcome: JobOutcome
    done: anyio.Event = field(default_factory=anyio.Event)
    applied: bool = False
    error: BaseException | None = None


class _Notifier:
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


class GenerationService:
    """Drains the generation queue with bounded concurrency (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.gen = settings.generator
        self.prompt_version = prompt_version_for(self.gen)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.progress = progress
        self.summary = RunOnceSummary()
        self.call_latency = CallLatency()
        self.state = "idle"
        self._endpoints: list[Endpoint] = []
        self._index = DuplicateIndex(self.gen.near_duplicate_jaccard)
        self._exporter = JsonlExporter(db, settings.paths.state_dir)
        self._notifier = _Notifier()
        self._stopping = False
        self._fatal: GeneratorError | None = None
        self._started_at: float | None = None
        self._all_down_since: float | None = None
        self._published: str | None = None
        self._send: Any = None
        self._events: Counter[str] = Counter()
        self._once = True
        self._locks_dir = settings.paths.state_dir / LOCKS_DIRNAME
        self._backend: ResolvedBackend | None = None
        self._engine: LlamaServer | None = None
        self._health = CallHealth()

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<GenerationService {s['state']} in_flight={s['in_flight']}/{s['capacity']}"
            f" pairs={s['pairs_stored']} dead={s['dead']}>"
        )

    # ------------------------------------------------------------------ public API

    def stop_claiming(self) -> None:
        """Claim nothing more; in-flight requests finish and `serve`/`run_once` return."""
        self._stopping = True
        self._notifier.notify()

    def wake(self) -> None:
        """New jobs exist (the watcher ran `ensure_jobs`): look at the queue now."""
        self._notifier.notify()

    def stats(self) -> dict[str, Any]:
        """Live counters for `/status` and logs."""
        elapsed = 0.0 if self._started_at is None else time.monotonic() - self._started_at
        return {
            "state": self.state,
            "model": self.gen.model,
            "backend": self.gen.backend,
            "prompt_version": self.prompt_version,
            "in_flight": sum(ep.in_flight for ep in self._endpoints),
            "capacity": sum(ep.concurrency for ep in self._endpoints),
            "endpoints": [ep.describe() for ep in self._endpoints],
            "pairs_stored": self.summary.pairs_stored,
            "jobs_done": self.summary.jobs_done,
            "calls": self.summary.calls,
            "retries": self.summary.retries,
            "repairs": self.summary.repairs,
            "dead": self.summary.dead,
            "released": self.summary.released,
            "pairs_per_s": round(self.summary.pairs_stored / elapsed, 3) if elapsed else 0.0,
            "events": dict(self._events),
            "call_latency_s": self.call_latency.snapshot(),
            "error": None if self._fatal is None else str(self._fatal),
            "backend_choice": None if self._backend is None else self._backend.describe(),
            "engine": None if self._engine is None else self._engine.describe(),
            "health": self._health.describe(),
        }

    async def run_once(self) -> RunOnceSummary:
        """Drain the queue (waiting out backoffs and short outages), export, return.

        Raises GeneratorUnavailable / ModelMissingError when generation cannot go on.
        """
        async with self._resources():
            await self._start(wait_for_server=False)
            await self._run(once=True)
            self.summary.exported_repos = await self._exporter.sync()
        if self._fatal is not None:
            raise self._fatal
        return self.summary

    async def serve(self) -> None:
        """Generate until `stop_claiming()`; outages and a missing model are waited out.

        A configuration error (the server refuses our requests, the engine's GGUF is bad)
        returns with it in `stats()["error"]`; the caller decides when to try again.
        """
        try:
            async with self._resources():
                await self._start(wait_for_server=True)
                await self._run(once=False)
                with anyio.CancelScope(shield=True):
                    await self._exporter.sync()
        except ConfigurationError as exc:
            self._fatal = exc
            await self._publish("failing", str(exc))
            log.error("generation.configuration_error", error=str(exc))

    # ------------------------------------------------------------------ setup

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        self._started_at = time.monotonic()
        try:
            self._backend = await resolve_backend(self.gen)
        except ConfigurationError as exc:
            await self._publish("failing", str(exc))
            raise
        self.gen = self._backend.gen
        capacity = sum(ep.concurrency for ep in self.gen.endpoints) or self.gen.concurrency
        # The owner lock is held until this run ends; the kernel drops it if the process dies,
        # which is how other runs tell this run's leases from orphans (pipeline/generate/liveness).
        with owner_lock(self._locks_dir, self.owner):
            async with open_session(self.gen, capacity) as session:
                try:
                    if self._backend.embedded:
                        async with self._embedded_engine(session):
                            yield
                    else:
                        self._endpoints = build_endpoints(session, self.gen)
                        yield
                finally:
                    self.summary.duration_s = time.monotonic() - self._started_at
                    self.state = "stopped"

    @asynccontextmanager
    async def _embedded_engine(self, session: Any) -> AsyncIterator[None]:
        """Start doctune's own llama.cpp server, supervise it (restart on crash), stop it."""
        spec = embedded_spec(self.gen, self.settings.paths.state_dir / "llamacpp.log")
        engine = self._engine = LlamaServer(spec)
        started = time.monotonic()
        try:
            await engine.start()
            self.summary.engine_start_s = time.monotonic() - started
        except LlamaServerError as exc:
            await self._publish("failing", str(exc))
            raise ConfigurationError(str(exc), reason="engine_start") from None
        endpoint = embedded_endpoint(session, self.gen, engine.base_url, EMBEDDED_CONCURRENCY)
        self._endpoints = [endpoint]

        def moved(server: LlamaServer) -> None:
            # a restarted engine listens on a new port; a crash is an outage until then
            endpoint.url = endpoint.client.url = server.base_url

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(engine.supervise, on_change=moved))
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await engine.stop()

    async def _start(self, *, wait_for_server: bool) -> None:
        self.state = "starting"
        self.summary.orphans_released = await self._reclaim_leases()
        for repo, question in await repo_questions(self.db):
            self._index.add(repo, question)
        failures: list[GeneratorError] = []
        for ep in self._endpoints:
            try:
                await ep.client.warm_up()
            except ModelMissingError as exc:
                await self._publish("model_missing", str(exc))
                if not wait_for_server:
                    raise
                ep.breaker.trip(str(exc))
                failures.append(exc)
            except OutageError as exc:
                ep.breaker.trip(str(exc))
                failures.append(exc)
        if failures and len(failures) == len(self._endpoints) and not wait_for_server:
            message = "; ".join(str(f) for f in failures)
            await self._publish("unreachable", message)
            raise GeneratorUnavailable(f"generator unreachable: {message}")
        await self._publish_health()
        log.info(
            "generation.started",
            model=self.gen.model,
            prompt_version=self.prompt_version,
            endpoints=[ep.url for ep in self._endpoints],
            orphans_released=self.summary.orphans_released,
        )

    # ------------------------------------------------------------------ main loop

    async def _run(self, *, once: bool) -> None:
        self.state = "running"
        self._once = once
        send, receive = anyio.create_memory_object_stream[_Pending](WRITER_BATCH * 4)
        self._send = send
        async with anyio.create_task_group() as support:
            support.start_soon(self._writer, receive)
            support.start_soon(self._reclaim_loop)
            if not once:
                support.start_soon(self._export_loop)
            for ep in self._endpoints:
                if ep.breaker.is_open:
                    self._start_probe(support, ep)
            async with anyio.create_task_group() as workers:
                await self._dispatch(workers, support, once)
            # every worker has committed its outcome; nothing is left for the writer
            support.cancel_scope.cancel()
        self.state = "drained" if once else "stopped"

    async def _dispatch(self, workers: TaskGroup, support: TaskGroup, once: bool) -> None:
        """Keep every free slot busy; claim in batches of about two rounds (PREFETCH_ROUNDS).

        Fewer, larger claim transactions leave the write lock to the commits, which a slot
        waits for before its next call.
        """
        ready: deque[ClaimedJob] = deque()
        try:
            while not (self._stopping or self._fatal is not None):
                event = self._notifier.current
                for ep in self._endpoints:
                    if ep.breaker.is_open and not ep.probing:
                        self._start_probe(support, ep)
                if self._check_all_down(once):
                    return
                while ready and (target := self._free_endpoint()) is not None:
                    target.in_flight += 1
                    workers.start_soon(self._work, ready.popleft(), target)
                usable = sum(ep.concurrency for ep in self._endpoints if not ep.breaker.is_open)
                in_flight = sum(ep.in_flight for ep in self._endpoints)
                want = (1 + PREFETCH_ROUNDS) * usable - in_flight - len(ready)
                free = sum(ep.free for ep in self._endpoints)
                if want > 0 and (want >= usable * PREFETCH_ROUNDS // 2 or (free and not ready)):
                    jobs = await state_jobs.claim_jobs(
                        self.db,
                        prompt_version=self.prompt_version,
                        model=self.gen.model,
                        owner=self.owner,
                        limit=want,
                        lease_s=self.gen.lease_s,
                    )
                    if jobs:
                        ready.extend(jobs)
                        continue
                    due = await state_jobs.next_due_at(
                        self.db, prompt_version=self.prompt_version, model=self.gen.model
                    )
                    if once and due is None and in_flight == 0 and not ready:
                        return
                    wait_s = IDLE_POLL_S if due is None else min(IDLE_POLL_S, due - now())
                    await self._notifier.wait(event, max(wait_s, 0.02))
                    continue
                await self._notifier.wait(event, IDLE_POLL_S)
        finally:
            if ready:  # prefetched but never sent: give them back, nothing spent
                with anyio.CancelScope(shield=True):
                    await state_jobs.apply_outcomes(
                        self.db, [JobOutcome(j.id, j.claim_token, "release") for j in ready]
                    )

    def _free_endpoint(self) -> Endpoint | None:
        best = max(self._endpoints, key=lambda e: e.free)
        return best if best.free > 0 else None

    def _check_all_down(self, once: bool) -> bool:
        """In `run --once`, give up when every endpoint stayed down for `outage_give_up_s`."""
        if not all(ep.breaker.is_open for ep in self._endpoints):
            self._all_down_since = None
            return False
        if self._all_down_since is None:
            self._all_down_since = time.monotonic()
        if once and time.monotonic() - self._all_down_since >= self.gen.outage_give_up_s:
            errors = "; ".join(ep.breaker.last_error for ep in self._endpoints)
            self._fatal = GeneratorUnavailable(
                f"generator unreachable for {self.gen.outage_give_up_s:.0f}s: {errors}"
            )
            return True
        return False

    # ------------------------------------------------------------------ one job

    async def _work(self, job: ClaimedJob, ep: Endpoint) -> None:
        # Each worker runs in its own task (its own contextvars copy): every log line emitted
        # while handling this job carries its id, chunk hash and attempt number.
        with job_context(job.id, job.chunk_id, job.attempts + job.repairs + 1):
            await self._work_in_context(job, ep)

    async def _work_in_context(self, job: ClaimedJob, ep: Endpoint) -> None:
        try:
            outcome, handles = await self._call(job, ep)
            pending = _Pending(outcome)
            await self._send.send(pending)
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            self._count(outcome, pending.applied)
            if not pending.applied:
                for handle in handles:
                    self._index.remove(job.repo, handle)
        except anyio.get_cancelled_exc_class():
            # Give the job back so a stop does not leave it leased until the lease runs out.
            with anyio.CancelScope(shield=True):
                await state_jobs.apply_outcomes(
                    self.db,
                    [JobOutcome(job.id, job.claim_token, "release", "outage", "cancelled")],
                )
            raise
        finally:
            ep.in_flight -= 1
            self._notifier.notify()

    async def _call(self, job: ClaimedJob, ep: Endpoint) -> tuple[JobOutcome, list[int]]:
        request = request_for(job, self.gen)
        if request.spans == []:
            return outcome_for_no_span(job), []
        ep.calls += 1
        self.summary.calls += 1
        engine_pid = self._engine.pid if self._engine and self._engine.running else None
        started = time.perf_counter()
        try:
            completion = await ep.client.complete(request.messages, request.schema)
        except GeneratorError as exc:
            self.call_latency.observe("error", time.perf_counter() - started)
            if isinstance(exc, OutageError) and await self._engine_died(engine_pid):
                # a request that kills the engine must spend attempts, or it would loop forever
                exc = RetryableError(
                    f"the embedded engine died on this request: {exc.detail}",
                    reason="engine_crashed",
                )
            ep.failures[exc.reason] = ep.failures.get(exc.reason, 0) + 1
            self._health.record_failure(str(exc))
            await self._on_error(ep, exc)
            return outcome_for_error(job, exc, self.gen), []
        self.call_latency.observe("ok", time.perf_counter() - started)
        self._health.record_success()
        ep.breaker.record_success()
        if self._published is not None and not self._published.startswith("ok|"):
            await self._publish_health()
        self.summary.prompt_tokens += completion.prompt_tokens or 0
        self.summary.completion_tokens += completion.completion_tokens or 0
        return outcome_for_reply(
            job, completion, self.gen, self.prompt_version, self._index, request.spans
        )

    async def _engine_died(self, pid: int | None) -> bool:
        """The embedded engine that was running (as `pid`) when the call started has exited."""
        if self._engine is None or pid is None:
            return False
        with anyio.move_on_after(1.0):
            while self._engine.running and self._engine.pid == pid:  # noqa: ASYNC110
                await anyio.sleep(0.05)  # a child process's exit is not an event we get
        return not (self._engine.running and self._engine.pid == pid)

    async def _on_error(self, ep: Endpoint, exc: GeneratorError) -> None:
        if isinstance(exc, ConfigurationError):
            # the same for every job: stop with this one message instead of dead-lettering
            if self._fatal is None:
                self._fatal = exc
                log.error("generation.configuration_error", url=ep.url, error=str(exc))
                await self._publish("failing", str(exc))
            self._notifier.notify()
            return
        if isinstance(exc, ModelMissingError):
            await self._publish("model_missing", str(exc))
            log.error("generation.model_missing", url=ep.url, error=str(exc))
            if self._once:
                if self._fatal is None:
                    self._fatal = exc
            else:  # the daemon waits: the probe re-checks until the model has been pulled
                ep.breaker.trip(str(exc))
                self._notifier.notify()
            return
        if exc.trips_breaker and ep.breaker.record_failure(str(exc)):
            log.warning("generation.breaker_open", url=ep.url, error=str(exc))
            self._notifier.notify()
        await self._publish_health()

    def _count(self, outcome: JobOutcome, applied: bool) -> None:
        log.debug("generation.job", outcome=outcome.kind, reason=outcome.reason, applied=applied)
        if not applied:
            self.summary.lost_leases += 1
            return
        if outcome.event_kind:
            self._events[f"{outcome.event_kind}:{outcome.reason.split(':')[-1]}"] += 1
        if outcome.kind == "done":
            self.summary.jobs_done += 1
            self.summary.pairs_stored += len(outcome.pairs)
        elif outcome.kind == "retry":
            self.summary.retries += 1
        elif outcome.kind == "repair":
            self.summary.repairs += 1
        elif outcome.kind == "dead":
            self.summary.dead += 1
            log.info("generation.dead", job_id=outcome.job_id, reason=outcome.reason)
        else:
            self.summary.released += 1

    # ------------------------------------------------------------------ support tasks

    async def _writer(self, receive: Any) -> None:
        """Commit outcomes in batches: one transaction for whatever has arrived."""
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < WRITER_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                try:
                    results = await state_jobs.apply_outcomes(self.db, [b.outcome for b in batch])
                except Exception as exc:
                    for item in batch:
                        item.error = exc
                        item.done.set()
                    raise
                for item, applied in zip(batch, results, strict=True):
                    item.applied = applied
                    item.done.set()
                if self.progress is not None:
                    self.progress(self.stats())

    async def _reclaim_leases(self) -> int:
        """Free leases whose run died (its owner lock is free) or that expired."""
        return await state_jobs.release_orphaned_leases(
            self.db, lambda owner: not owner_alive(self._locks_dir, owner)
        )

    async def _reclaim_loop(self) -> None:
        """While running, free dead runs' leases every RECLAIM_INTERVAL_S, not only at start."""
        while True:
            await anyio.sleep(RECLAIM_INTERVAL_S)
            released = await self._reclaim_leases()
            if released:
                self.summary.orphans_released += released
                log.info("generation.leases_reclaimed", jobs=released)
                self._notifier.notify()

    async def _export_loop(self) -> None:
        while True:
            await anyio.sleep(self.gen.export_interval_s)
            await self._exporter.sync()

    def _start_probe(self, tg: TaskGroup, ep: Endpoint) -> None:
        ep.probing = True
        tg.start_soon(self._probe, ep)

    async def _probe(self, ep: Endpoint) -> None:
        """While the breaker is open: probe every `breaker_probe_s`; close it on success."""
        try:
            while ep.breaker.is_open and not self._stopping:
                await anyio.sleep(self.gen.breaker_probe_s)
                try:
                    await ep.client.probe()
                    await ep.client.warm_up()
                except ModelMissingError as exc:
                    await self._publish("model_missing", str(exc))
                    continue
                except GeneratorError as exc:
                    ep.breaker.last_error = str(exc)
                    continue
                ep.breaker.close()
                log.info("generation.breaker_closed", url=ep.url)
                await self._publish_health()
        finally:
            ep.probing = False
            self._notifier.notify()

    async def _publish_health(self) -> None:
        if self._fatal is not None:
            return  # "failing" with the fatal error stays until a new service starts
        down = [ep for ep in self._endpoints if ep.breaker.is_open]
        if not down:
            state = self._health.state()
            await self._publish(state, self._health.last_error if state != "ok" else "")
        elif len(down) == len(self._endpoints):
            errors = "; ".join(ep.breaker.last_error for ep in down)
            await self._publish("breaker_open", f"generator unreachable, probing: {errors}")
        else:
            await self._publish("degraded", ", ".join(ep.url for ep in down) + " unreachable")

    async def _publish(self, state: str, message: str) -> None:
        key = f"{state}|{message}"
        if key == self._published:
            return
        self._published = key
        with anyio.CancelScope(shield=True):
            await state_jobs.set_generator_status(
                self.db,
                {
                    "state": state,
                    "message": message,
                    "model": self.gen.model,
                    "backend": self.gen.backend,
                    "backend_choice": None if self._backend is None else self._backend.why,
                    "endpoints": [ep.url for ep in self._endpoints],
                    "prompt_version": self.prompt_version,
                },
            )
