"""GenerationService: bounded concurrent workers that drain the job queue into pairs.

The service wires one run's parts: the claim loop (`claims`) claims as many jobs as there are
free slots (per endpoint, breakers closed: `pool`), each job runs in its own task (`calls`: the
LLM call outside any transaction), and its outcome goes to one writer (`writer`) that commits
batches in single transactions. A job keeps its slot until its outcome is committed, so a
crash can repeat at most `concurrency` LLM calls.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import structlog

from pipeline.clients.errors import ConfigurationError
from pipeline.clients.http import open_session
from pipeline.generate.backend import (
    EMBEDDED_CONCURRENCY,
    ResolvedBackend,
    embedded_spec,
    resolve_backend,
)
from pipeline.generate.calls import JobCalls
from pipeline.generate.claims import ClaimLoop
from pipeline.generate.control import RunControl
from pipeline.generate.endpoints import build_endpoints, embedded_endpoint
from pipeline.generate.engine import EmbeddedEngine
from pipeline.generate.export import JsonlExporter
from pipeline.generate.latency import CallLatency
from pipeline.generate.liveness import LOCKS_DIRNAME, owner_alive, owner_lock
from pipeline.generate.pool import EndpointPool
from pipeline.generate.prompt import prompt_version_for
from pipeline.generate.status import StatusPublisher
from pipeline.generate.summary import RunOnceSummary, Tally
from pipeline.generate.validate import DuplicateIndex
from pipeline.generate.writer import OutcomeWriter
from pipeline.settings import Settings
from state import jobs as state_jobs
from state.db import Database
from state.pairs import repo_questions

__all__ = ["GenerationService", "RunOnceSummary"]

log = structlog.get_logger(__name__)

RECLAIM_INTERVAL_S = 2.0  # how often a running service frees leases of dead runs


class GenerationService:
    """Drains the generation queue with bounded concurrency (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        progress: Callable[[dict[str, Any]], None] | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.db = db
        self._trace_configs = tuple(trace_configs)
        self.settings = settings
        self.gen = settings.generator
        self.prompt_version = prompt_version_for(self.gen)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.progress = progress
        self.summary = RunOnceSummary()
        self.call_latency = CallLatency()
        self.state = "idle"
        self.control = RunControl()
        self.status = StatusPublisher(db, self._status_context)
        self.pool = EndpointPool(self.control, self.status, self.gen.breaker_probe_s)
        self._tally = Tally(self.summary)
        self._index = DuplicateIndex(self.gen.near_duplicate_jaccard)
        self._exporter = JsonlExporter(db, settings.paths.state_dir)
        self._started_at: float | None = None
        self._locks_dir = settings.paths.state_dir / LOCKS_DIRNAME
        self._backend: ResolvedBackend | None = None
        self._engine: EmbeddedEngine | None = None

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<GenerationService {s['state']} in_flight={s['in_flight']}/{s['capacity']}"
            f" pairs={s['pairs_stored']} dead={s['dead']}>"
        )

    # ------------------------------------------------------------------ public API

    def stop_claiming(self) -> None:
        """Claim nothing more; in-flight requests finish and `serve`/`run_once` return."""
        self.control.stop()

    def wake(self) -> None:
        """New jobs exist (the watcher ran `ensure_jobs`): look at the queue now."""
        self.control.wake()

    def stats(self) -> dict[str, Any]:
        """Live counters for `/status` and logs."""
        elapsed = 0.0 if self._started_at is None else time.monotonic() - self._started_at
        fatal = self.control.fatal
        return {
            "state": self.state,
            "model": self.gen.model,
            "backend": self.gen.backend,
            "prompt_version": self.prompt_version,
            "in_flight": self.pool.in_flight,
            "capacity": self.pool.capacity,
            "endpoints": self.pool.describe(),
            "pairs_stored": self.summary.pairs_stored,
            "jobs_done": self.summary.jobs_done,
            "calls": self.summary.calls,
            "retries": self.summary.retries,
            "repairs": self.summary.repairs,
            "dead": self.summary.dead,
            "released": self.summary.released,
            "pairs_per_s": round(self.summary.pairs_stored / elapsed, 3) if elapsed else 0.0,
            "events": dict(self._tally.events),
            "call_latency_s": self.call_latency.snapshot(),
            "error": None if fatal is None else str(fatal),
            "backend_choice": None if self._backend is None else self._backend.describe(),
            "engine": None if self._engine is None else self._engine.describe(),
            "health": self.pool.health.describe(),
        }

    async def run_once(self) -> RunOnceSummary:
        """Drain the queue (waiting out backoffs and short outages), export, return.

        Raises GeneratorUnavailable / ModelMissingError when generation cannot go on.
        """
        async with self._resources():
            await self._start(wait_for_server=False)
            await self._run(once=True)
            self.summary.exported_repos = await self._exporter.sync()
        if self.control.fatal is not None:
            raise self.control.fatal
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
            self.control.fatal = exc
            await self.status.publish("failing", str(exc))
            log.error("generation.configuration_error", error=str(exc))

    # ------------------------------------------------------------------ setup

    def _status_context(self) -> dict[str, Any]:
        return {
            "model": self.gen.model,
            "backend": self.gen.backend,
            "backend_choice": None if self._backend is None else self._backend.why,
            "endpoints": [ep.url for ep in self.pool.endpoints],
            "prompt_version": self.prompt_version,
        }

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        self._started_at = time.monotonic()
        try:
            self._backend = await resolve_backend(self.gen)
        except ConfigurationError as exc:
            await self.status.publish("failing", str(exc))
            raise
        self.gen = self._backend.gen
        capacity = sum(ep.concurrency for ep in self.gen.endpoints) or self.gen.concurrency
        # The owner lock is held until this run ends; the kernel drops it if the process dies,
        # which is how other runs tell this run's leases from orphans (pipeline/generate/liveness).
        with owner_lock(self._locks_dir, self.owner):
            async with open_session(self.gen, capacity, self._trace_configs) as session:
                try:
                    if self._backend.embedded:
                        async with self._embedded_engine(session):
                            yield
                    else:
                        self.pool.endpoints = build_endpoints(session, self.gen)
                        yield
                finally:
                    self.summary.duration_s = time.monotonic() - self._started_at
                    self.state = "stopped"

    @asynccontextmanager
    async def _embedded_engine(self, session: Any) -> AsyncIterator[None]:
        """Start doctune's own llama.cpp server, supervise it (restart on crash), stop it."""
        spec = embedded_spec(self.gen, self.settings.paths.state_dir / "llamacpp.log")
        engine = self._engine = EmbeddedEngine(spec)
        try:
            await engine.start()
        except ConfigurationError as exc:
            await self.status.publish("failing", str(exc))
            raise
        self.summary.engine_start_s = engine.start_s
        endpoint = embedded_endpoint(session, self.gen, engine.url, EMBEDDED_CONCURRENCY)
        self.pool.endpoints = [endpoint]

        def moved(url: str) -> None:
            # a restarted engine listens on a new port; a crash is an outage until then
            endpoint.url = endpoint.client.url = url

        async with engine.supervised(on_move=moved):
            yield

    async def _start(self, *, wait_for_server: bool) -> None:
        self.state = "starting"
        self.summary.orphans_released = await self._reclaim_leases()
        for repo, question in await repo_questions(self.db):
            self._index.add(repo, question)
        await self.pool.warm_up(wait_for_server=wait_for_server)
        await self.pool.publish_health()
        log.info(
            "generation.started",
            model=self.gen.model,
            prompt_version=self.prompt_version,
            endpoints=[ep.url for ep in self.pool.endpoints],
            orphans_released=self.summary.orphans_released,
        )

    # ------------------------------------------------------------------ main loop

    async def _run(self, *, once: bool) -> None:
        self.state = "running"
        self.control.once = once
        writer = OutcomeWriter(self.db, self._report_progress)
        calls = JobCalls(
            self.db,
            self.gen,
            self.prompt_version,
            pool=self.pool,
            writer=writer,
            tally=self._tally,
            latency=self.call_latency,
            index=self._index,
            control=self.control,
            engine=self._engine,
        )
        claims = ClaimLoop(
            self.db, self.gen, self.prompt_version, self.owner, self.pool, self.control
        )
        async with anyio.create_task_group() as support:
            support.start_soon(writer.run)
            support.start_soon(self._reclaim_loop)
            if not once:
                support.start_soon(self._export_loop)
            self.pool.probe_open(support)
            async with anyio.create_task_group() as workers:
                await claims.run(lambda job, ep: workers.start_soon(calls.work, job, ep), support)
            # every worker has committed its outcome; nothing is left for the writer
            support.cancel_scope.cancel()
        self.state = "drained" if once else "stopped"

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.stats())

    # ------------------------------------------------------------------ support tasks

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
                self.control.wake()

    async def _export_loop(self) -> None:
        while True:
            await anyio.sleep(self.gen.export_interval_s)
            await self._exporter.sync()
