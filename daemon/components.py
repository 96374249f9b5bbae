"""What the daemon drives (generation, reconcile, status snapshot), swappable in tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.training_scheduler import RetrainFn
from daemon.watcher import WatchedRepo
from pipeline.settings import GeneratorSettings, Settings
from state.db import Database

__all__ = ["Components", "GenerationLike", "real_components"]


class GenerationLike(Protocol):
    """The generation team's `GenerationService` as the daemon drives it."""

    async def serve(self) -> None: ...

    def stop_claiming(self) -> None: ...

    def wake(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Components:
    """Everything the daemon drives; `real_components()` wires the real ones, tests may swap."""

    discover_repos: Callable[[Settings], Sequence[WatchedRepo]]
    reconcile: Callable[..., Awaitable[Any]]
    ensure_jobs: Callable[[Database, GeneratorSettings], Awaitable[int]]
    generation: Callable[[Database, Settings], GenerationLike]
    snapshot: Callable[[Database], Awaitable[dict[str, Any]]]
    retrain: RetrainFn | None = None


def real_components() -> Components:
    """The production wiring (imported here so importing this module stays cheap)."""
    from pipeline.generate.plan import ensure_jobs
    from pipeline.generate.service import GenerationService
    from pipeline.ingest.reconcile import reconcile
    from pipeline.ingest.sources import discover_repos
    from state.status import snapshot

    return Components(
        discover_repos=discover_repos,
        reconcile=reconcile,
        ensure_jobs=ensure_jobs,
        generation=GenerationService,
        snapshot=snapshot,
    )
