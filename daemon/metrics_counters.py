"""The daemon's event counters in /metrics: calls, pairs stored, job outcomes, retrains, reloads.

Events are counters kept in the daemon process by the code where each event happens: the
generation service counts LLM calls, stored pairs, job outcomes and job events (rejections by
reason) in `_call`/`_count`, the training scheduler counts retrains, the reconcile loop counts
reconciles and watch batches. They are exposed here as they are, so `/status` and `/metrics`
show the same numbers; like every in-process Prometheus counter they restart at zero with the
daemon (`rate()` handles that). They are not derived from `job_events`: that table records
failures only (not calls or stored pairs) and loses rows when jobs are deleted, so counts
derived from it could go down. LLM call latency is a histogram observed around each call
(`doctune_llm_call_duration_seconds{outcome}`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from daemon.metric_families import as_dict, as_number, gauge, labelled

__all__ = ["daemon_counters"]

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


def daemon_counters(daemon: Mapping[str, Any]) -> Iterator[Metric]:
    """The families of the `daemon` part of a `/status` body (empty without a daemon)."""
    yield from _daemon_metrics(daemon)
    yield from _generation_events(as_dict(daemon.get("generation")))
    yield from _scheduler_metrics(as_dict(daemon.get("scheduler")))


def _daemon_metrics(daemon: Mapping[str, Any]) -> Iterator[Metric]:
    phase = daemon.get("phase")
    yield labelled(
        GaugeMetricFamily,
        "doctune_daemon_phase",
        "1 for the phase the daemon is in (starting, running, draining).",
        ["phase"],
        [([phase], 1)] if isinstance(phase, str) else [],
    )
    yield gauge("doctune_watched_repos", "Repositories watched.", len(daemon.get("repos") or []))
    counters = as_dict(daemon.get("counters"))
    for key, (name, doc) in _DAEMON_COUNTERS.items():
        family = CounterMetricFamily(name, doc)
        number = as_number(counters.get(key))
        if number is not None:
            family.add_metric([], number)
        yield family


def _generation_events(gen: Mapping[str, Any]) -> Iterator[Metric]:
    yield gauge("doctune_llm_in_flight", "LLM requests in flight.", gen.get("in_flight"))
    yield gauge("doctune_llm_capacity", "Concurrent LLM requests allowed.", gen.get("capacity"))
    state = gen.get("state")
    yield labelled(
        GaugeMetricFamily,
        "doctune_generator_state",
        "1 for the generation service's state.",
        ["state"],
        [([state], 1)] if isinstance(state, str) else [],
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_llm_calls",
        "LLM generation calls made.",
        [],
        [([], gen.get("calls"))],
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_pairs_stored",
        "Question/answer pairs stored by the generation service.",
        [],
        [([], gen.get("pairs_stored"))],
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_generation_jobs",
        "Generation job outcomes committed (done, retry, repair, dead, released).",
        ["outcome"],
        (([label], gen.get(key)) for key, label in _JOB_OUTCOMES.items()),
    )
    events = as_dict(gen.get("events"))
    yield labelled(
        CounterMetricFamily,
        "doctune_job_events",
        "Generation job events by kind (rejected, error, outage, truncated, dead) and reason.",
        ["kind", "reason"],
        (([*key.split(":", 1)], n) for key, n in events.items() if ":" in key),
    )
    yield _latency_histogram(as_dict(gen.get("call_latency_s")))


def _latency_histogram(by_outcome: Mapping[str, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "doctune_llm_call_duration_seconds",
        "Wall time of LLM generation calls, by outcome (ok, error).",
        labels=["outcome"],
    )
    for outcome, hist in by_outcome.items():
        hist = as_dict(hist)
        buckets = [(str(le), float(n)) for le, n in as_dict(hist.get("buckets")).items()]
        if buckets:
            family.add_metric([outcome], buckets, float(hist.get("sum", 0.0)))
    return family


def _scheduler_metrics(scheduler: Mapping[str, Any]) -> Iterator[Metric]:
    yield gauge(
        "doctune_retrain_running", "1 while a retrain is running.", scheduler.get("running")
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_retrain_requests",
        "Retrain requests received (signal, threshold, manual).",
        [],
        [([], scheduler.get("requests"))],
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_retrains",
        "Retrains finished by the daemon, by outcome (ok, failed).",
        ["outcome"],
        [(["ok"], scheduler.get("runs_ok")), (["failed"], scheduler.get("runs_failed"))],
    )
    yield labelled(
        CounterMetricFamily,
        "doctune_retrains_started",
        "Retrains started by the daemon.",
        [],
        [([], scheduler.get("runs_started"))],
    )
