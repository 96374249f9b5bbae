"""Metric families from a status body: tolerant reads of its parts, gauges and labelled families.

A `/status` body is JSON that may lack any part (a snapshot error, a component not running):
a missing or non-numeric value gives a family without that sample, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["as_dict", "as_number", "gauge", "labelled"]


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a dict, else an empty one (a status body may lack any part)."""
    return value if isinstance(value, dict) else {}


def as_number(value: Any) -> float | None:
    """`value` as a float (booleans as 0/1); None for anything that is not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    """An unlabelled gauge; without a sample when `value` is not a number."""
    family = GaugeMetricFamily(name, doc)
    number = as_number(value)
    if number is not None:
        family.add_metric([], number)
    return family


def labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    rows: Iterable[tuple[list[str], Any]],
) -> GaugeMetricFamily | CounterMetricFamily:
    """A `kind` family with one sample per (label values, value) row that holds a number."""
    family = kind(name, doc, labels=labels)
    for values, value in rows:
        number = as_number(value)
        if number is not None:
            family.add_metric([str(v) for v in values], number)
    return family
