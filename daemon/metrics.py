"""The /metrics exposition: the status snapshot and live counters as prometheus_client families.

Levels read from SQLite at scrape time (files, chunks, jobs, pairs, training runs) are
gauges with their dimension as a label (`doctune_jobs{state="pending"}`), built here.
Events are counters kept in the daemon process, exposed as they are
(`daemon.metrics_counters`), so `/status` and `/metrics` show the same numbers. Process
figures come from prometheus_client's own `ProcessCollector` (`process_*`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.metric_families import as_dict, gauge, labelled
from daemon.metrics_counters import daemon_counters

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
        yield gauge(
            "doctune_status_snapshot_ok",
            "1 when the state snapshot could be read from SQLite, else 0.",
            0 if "snapshot_error" in status else 1,
        )
        yield from _ingest_levels(status)
        yield from _generation_levels(status)
        yield from _training_levels(status)
        yield from daemon_counters(as_dict(status.get("daemon")))


def _ingest_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    files, chunks, skips = (as_dict(status.get(k)) for k in ("files", "chunks", "skips"))
    yield labelled(
        GaugeMetricFamily,
        "doctune_files",
        "Tracked source files by status (live, skipped, deleted).",
        ["status"],
        (([k], v) for k, v in as_dict(files.get("by_status")).items()),
    )
    yield labelled(
        GaugeMetricFamily,
        "doctune_live_files",
        "Live source files by kind (doc, code).",
        ["kind"],
        (([k], v) for k, v in as_dict(files.get("by_kind")).items()),
    )
    yield labelled(
        GaugeMetricFamily,
        "doctune_skipped_files",
        "Skipped files by reason.",
        ["reason"],
        (([k], v) for k, v in as_dict(skips.get("by_reason")).items()),
    )
    by_strategy = as_dict(chunks.get("by_strategy"))
    yield labelled(
        GaugeMetricFamily,
        "doctune_chunks",
        "Distinct live chunks by chunking strategy.",
        ["strategy"],
        (([s], as_dict(v).get("distinct")) for s, v in by_strategy.items()),
    )
    yield labelled(
        GaugeMetricFamily,
        "doctune_chunk_memberships",
        "Live (file, chunk) memberships by chunking strategy.",
        ["strategy"],
        (([s], as_dict(v).get("memberships")) for s, v in by_strategy.items()),
    )
    yield gauge("doctune_chunks_stored", "Chunks stored, live or not.", chunks.get("stored"))
    yield gauge(
        "doctune_chunks_live", "Distinct chunks in at least one live file.", chunks.get("live")
    )


def _generation_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    yield labelled(
        GaugeMetricFamily,
        "doctune_jobs",
        "Generation jobs by state (pending, leased, done, dead).",
        ["state"],
        (([k], v) for k, v in as_dict(status.get("jobs")).items()),
    )
    dead = status.get("dead_letters")
    yield labelled(
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
    pairs = as_dict(status.get("pairs"))
    yield labelled(
        GaugeMetricFamily,
        "doctune_pairs",
        "Stored question/answer pairs by state (live, retired).",
        ["state"],
        (([k], pairs.get(k)) for k in ("live", "retired")),
    )
    yield labelled(
        GaugeMetricFamily,
        "doctune_pair_tokens",
        "LLM tokens spent on the stored pairs, by kind (prompt, completion).",
        ["kind"],
        (([k], v) for k, v in as_dict(status.get("tokens")).items()),
    )


def _training_levels(status: Mapping[str, Any]) -> Iterator[Metric]:
    training = as_dict(status.get("training"))
    yield labelled(
        GaugeMetricFamily,
        "doctune_training_runs",
        "Training runs recorded, by state.",
        ["state"],
        (([k], v) for k, v in as_dict(training.get("runs")).items()),
    )
    yield gauge(
        "doctune_new_pairs_since_last_run",
        "Live pairs added since the last training run.",
        training.get("new_pairs_since_last_run"),
    )
