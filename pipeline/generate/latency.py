"""LLM call latency: a prometheus_client histogram kept by each generation service.

The service observes every call where it is made; `snapshot()` is the JSON-able form that
`/status` shows and the daemon's `/metrics` turns back into a histogram family.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Histogram

__all__ = ["CALL_BUCKETS_S", "CallLatency"]

# Local models answer in seconds to minutes; hosted ones in well under a second.
CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class CallLatency:
    """Wall time of LLM calls by outcome ("ok" or "error")."""

    def __init__(self) -> None:
        # registry=None: one histogram per service, not a process-global metric.
        self._histogram = Histogram(
            "llm_call_duration_seconds",
            "Wall time of LLM generation calls.",
            labelnames=("outcome",),
            buckets=CALL_BUCKETS_S,
            registry=None,
        )

    def observe(self, outcome: str, seconds: float) -> None:
        """Record one call that took `seconds`."""
        self._histogram.labels(outcome=outcome).observe(seconds)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{outcome: {"buckets": {le: cumulative count}, "sum": s, "count": n}}."""
        out: dict[str, dict[str, Any]] = {}
        for family in self._histogram.collect():
            for sample in family.samples:
                labels = dict(sample.labels)
                entry = out.setdefault(labels["outcome"], {"buckets": {}, "sum": 0.0, "count": 0})
                if sample.name.endswith("_bucket"):
                    entry["buckets"][labels["le"]] = int(sample.value)
                elif sample.name.endswith("_sum"):
                    entry["sum"] = round(sample.value, 6)
                elif sample.name.endswith("_count"):
                    entry["count"] = int(sample.value)
        return out
