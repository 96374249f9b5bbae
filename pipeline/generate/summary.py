"""What a generation run did: the counters of `run --once`'s summary and the daemon's status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from state.job_outcomes import JobOutcome

__all__ = ["RunOnceSummary", "Tally"]

log = structlog.get_logger(__name__)


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


class Tally:
    """Counts committed outcomes into the summary, and job events by `kind:reason`."""

    def __init__(self, summary: RunOnceSummary) -> None:
        self.summary = summary
        self.events: Counter[str] = Counter()

    def count(self, outcome: JobOutcome, applied: bool) -> None:
        """One job's outcome; `applied` False: the lease was lost, nothing was stored."""
        log.debug("generation.job", outcome=outcome.kind, reason=outcome.reason, applied=applied)
        summary = self.summary
        if not applied:
            summary.lost_leases += 1
            return
        if outcome.event_kind:
            self.events[f"{outcome.event_kind}:{outcome.reason.split(':')[-1]}"] += 1
        if outcome.kind == "done":
            summary.jobs_done += 1
            summary.pairs_stored += len(outcome.pairs)
        elif outcome.kind == "retry":
            summary.retries += 1
        elif outcome.kind == "repair":
            summary.repairs += 1
        elif outcome.kind == "dead":
            summary.dead += 1
            log.info("generation.dead", job_id=outcome.job_id, reason=outcome.reason)
        else:
            summary.released += 1
