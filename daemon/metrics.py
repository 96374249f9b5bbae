"""The /metrics exposition: the status snapshot and live counters as prometheus_client families.

Levels read from SQLite at scrape time (files, chunks, jobs, pairs, training runs) are
gauges with their dimension as a label (`doctune_jobs{state="pending"}`). Events are
counters kept in the daemon process by the code where each event happens: the generation
service counts LLM calls, stored pairs, job outcomes and job events (rejections by reason)
in `_call`/`_count`, the training scheduler counts retrains, the reconcile loop counts
reconciles and watch batches. They are exposed here as they are, so `/status` and
`/metrics` show the same numbers; like every in-process Prometheus counter they restart at
zero with the daemon (`rate()` handles that). They are not derived from `job_events`:
that table records failures only (not calls or stored pairs) and loses rows when jobs
are deleted, so counts derived from it could go down. LLM call latency is a histogram
observed around each call (`doctune_llm_call_duration_seconds{outcome}`). Process
figures come from prometheus_client's own `ProcessCollector` (`process_*`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# daemon counter key -> (metric name without _total, help)
_DAEMON_COUNTERS = {
    "reconciles": ("doctune_reconciles", "Reconcile passes run by the daemon."),
    "reconcile_errors": ("doctune_reconcile_errors", "Reconcile passes that failed."),
    "watch_batches": ("doctune_watch_batches", "Batches of file-system changes received."),
    "watch_paths": ("doctune_watch_changed_paths", "Changed paths received from the watcher."),
    "watch_rescans": ("doctune_watch_rescans", "Full rescans requested by the watcher."),
    "watch_failures": ("doctune_watch_failures", "Watcher failures (restarted)."),
    "new_jobs": ("doctune_new_jobs", "Generation jobs created after reconciles."),
    "reloads": ("doctune_config_reloads", "Successful configuration reloads (SIGHUP)."),
    "reload_errors": ("doctune_config_reload_errors", "Rejected configuration reloads."),
}
# generation stats key -> job outcome label
_JOB_OUTCOMES = {
    "jobs_done": "done",
    "retries": "retry",
    "repairs": "repair",
    "dead": "dead",
    "released": "released",
}


def render_metrics(status: Mapping[str, Any]) -> bytes:
    """Prometheus text exposition (format 0.0.4) of a `/status` body."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    ProcessCollector(registry=registry)
    return generate_latest(registry)


class _StatusCollector(Collector):
    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status
        yield _gauge(
            "doctune_status_snapshot_ok",
            "1 when the state snapshot could be read from SQLite, else 0.",
            0 if "snapshot_error" in status else 1,
        )
        yield from _ingest_levels(status)
        yield from _generation_levels(status)
        yield from _training_levels(status)
        daemon = _dict(status.get("daemon"))
        yield from _daemon_metrics(daemon)
        yield from _generation_events(_dict(daemon.get("generation")))
        yield from _scheduler_metrics(_dict(daemon.get("scheduler")))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    number = _number(value)
    if number is not None:
        family.add_metric([], number)
    return family


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    rows: Iterable[tuple[list[str], Any]],
) -> GaugeMetricFamily | CounterMetricFamily:
    family = kind(name, doc, labels=labels)
    for values, value in rows:
        number = _number(value)
        if number is not None:
            family.add_metric([str(v) for v in values], number)
    return family


def _ingest_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    files, chunks, skips = (_dict(status.get(k)) for k in ("files", "chunks", "skips"))
    yield _labelled(
        GaugeMetricFamily,
        "doctune_files",
        "Tracked source files by status (live, skipped, deleted).",
        ["status"],
        (([k], v) for k, v in _dict(files.get("by_status")).items()),
    )
    yield _labelled(
        GaugeMetricFamily,
        "doctune_live_files",
        "Live source files by kind (doc, code).",
        ["kind"],
        (([k], v) for k, v in _dict(files.get("by_kind")).items()),
    )
    yield _labelled(
        GaugeMetricFamily,
        "doctune_skipped_files",
        "Skipped files by reason.",
        ["reason"],
        (([k], v) for k, v in _dict(skips.get("by_reason")).items()),
    )
    by_strategy = _dict(chunks.get("by_strategy"))
    yield _labelled(
        GaugeMetricFamily,
        "doctune_chunks",
        "Distinct live chunks by chunking strategy.",
        ["strategy"],
        (([s], _dict(v).get("distinct")) for s, v in by_strategy.items()),
    )
    yield _labelled(
        GaugeMetricFamily,
        "doctune_chunk_memberships",
        "Live (file, chunk) memberships by chunking strategy.",
        ["strategy"],
        (([s], _dict(v).get("memberships")) for s, v in by_strategy.items()),
    )
    yield _gauge("doctune_chunks_stored", "Chunks stored, live or not.", chunks.get("stored"))
    yield _gauge(
        "doctune_chunks_live", "Distinct chunks in at least one live file.", chunks.get("live")
    )


def _generation_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    yield _labelled(
        GaugeMetricFamily,
        "doctune_jobs",
        "Generation jobs by state (pending, leased, done, dead).",
        ["state"],
        (([k], v) for k, v in _dict(status.get("jobs")).items()),
    )
    dead = status.get("dead_letters")
    yield _labelled(
        GaugeMetricFamily,
        "doctune_dead_jobs",
        "Dead generation jobs by reason (the 20 most frequent reasons).",
        ["reason"],
        (
            ([d.get("reason") or "unknown"], d.get("count"))
            for d in (dead if isinstance(dead, list) else [])
            if isinstance(d, dict)
        ),
    )
    pairs = _dict(status.get("pairs"))
    yield _labelled(
        GaugeMetricFamily,
        "doctune_pairs",
        "Stored question/answer pairs by state (live, retired).",
        ["state"],
        (([k], pairs.get(k)) for k in ("live", "retired")),
    )
    yield _labelled(
        GaugeMetricFamily,
        "doctune_pair_tokens",
        "LLM tokens spent on the stored pairs, by kind (prompt, completion).",
        ["kind"],
        (([k], v) for k, v in _dict(status.get("tokens")).items()),
    )


def _training_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    training = _dict(status.get("training"))
    yield _labelled(
        GaugeMetricFamily,
        "doctune_training_runs",
        "Training runs recorded, by state.",
        ["state"],
        (([k], v) for k, v in _dict(training.get("runs")).items()),
    )
    yield _gauge(
        "doctune_new_pairs_since_last_run",
        "Live pairs added since the last training run.",
        training.get("new_pairs_since_last_run"),
    )


def _daemon_metrics(daemon: Mapping[str, Any]) -> Iterator[Metric]:
    phase = daemon.get("phase")
    yield _labelled(
        GaugeMetricFamily,
        "doctune_daemon_phase",
        "1 for the phase the daemon is in (starting, running, draining).",
        ["phase"],
        [([phase], 1)] if isinstance(phase, str) else [],
    )
    yield _gauge("doctune_watched_repos", "Repositories watched.", len(daemon.get("repos") or []))
    counters = _dict(daemon.get("counters"))
    for key, (name, doc) in _DAEMON_COUNTERS.items():
        family = CounterMetricFamily(name, doc)
        number = _number(counters.get(key))
        if number is not None:
            family.add_metric([], number)
        yield family


def _generation_events(gen: Mapping[str, Any]) -> Iterator[Metric]:
    yield _gauge("doctune_llm_in_flight", "LLM requests in flight.", gen.get("in_flight"))
    yield _gauge("doctune_llm_capacity", "Concurrent LLM requests allowed.", gen.get("capacity"))
    state = gen.get("state")
    yield _labelled(
        GaugeMetricFamily,
        "doctune_generator_state",
        "1 for the generation service's state.",
        ["state"],
        [([state], 1)] if isinstance(state, str) else [],
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_llm_calls",
        "LLM generation calls made.",
        [],
        [([], gen.get("calls"))],
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_pairs_stored",
        "Question/answer pairs stored by the generation service.",
        [],
        [([], gen.get("pairs_stored"))],
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_generation_jobs",
        "Generation job outcomes committed (done, retry, repair, dead, released).",
        ["outcome"],
        (([label], gen.get(key)) for key, label in _JOB_OUTCOMES.items()),
    )
    events = _dict(gen.get("events"))
    yield _labelled(
        CounterMetricFamily,
        "doctune_job_events",
        "Generation job events by kind (rejected, error, outage, truncated, dead) and reason.",
        ["kind", "reason"],
        (([*key.split(":", 1)], n) for key, n in events.items() if ":" in key),
    )
    yield _latency_histogram(_dict(gen.get("call_latency_s")))


def _latency_histogram(by_outcome: Mapping[str, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "doctune_llm_call_duration_seconds",
        "Wall time of LLM generation calls, by outcome (ok, error).",
        labels=["outcome"],
    )
    for outcome, hist in by_outcome.items():
        hist = _dict(hist)
        buckets = [(str(le), float(n)) for le, n in _dict(hist.get("buckets")).items()]
        if buckets:
            family.add_metric([outcome], buckets, float(hist.get("sum", 0.0)))
    return family


def _scheduler_metrics(scheduler: Mapping[str, Any]) -> Iterator[Metric]:
    yield _gauge(
        "doctune_retrain_running", "1 while a retrain is running.", scheduler.get("running")
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_retrain_requests",
        "Retrain requests received (signal, threshold, manual).",
        [],
        [([], scheduler.get("requests"))],
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_retrains",
        "Retrains finished by the daemon, by outcome (ok, failed).",
        ["outcome"],
        [(["ok"], scheduler.get("runs_ok")), (["failed"], scheduler.get("runs_failed"))],
    )
    yield _labelled(
        CounterMetricFamily,
        "doctune_retrains_started",
        "Retrains started by the daemon.",
        [],
        [([], scheduler.get("runs_started"))],
    )
