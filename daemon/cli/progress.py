"""Progress on stderr while a command works: the parse bar, the generation bar, training events."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

__all__ = ["GenerationProgress", "TrainingProgress", "parse_progress"]

_BAR_WIDTH = 30


def _bar(done: int, total: int, empty: str) -> str:
    filled = _BAR_WIDTH * done // total if total else _BAR_WIDTH
    return "#" * filled + empty * (_BAR_WIDTH - filled)


def parse_progress() -> Callable[[int, int], None] | None:
    """`scan`'s one-line parse bar on a TTY (stderr); None (nothing shown) otherwise."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total:
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\rparsing [{_bar(done, total, '.')}] {done}/{total} files{end}")
            sys.stderr.flush()

    return show


class GenerationProgress:
    """`run --once`'s bar: one self-rewriting line on a TTY (stderr); silent otherwise (logs
    carry the facts). `start(total_jobs)` is what `pipeline.once` calls for the callback."""

    def __init__(self) -> None:
        self.total = 0
        self.enabled = sys.stderr.isatty()
        self._last_s = 0.0

    def start(self, total_jobs: int) -> GenerationProgress:
        self.total = total_jobs
        return self

    def __call__(self, stats: dict[str, Any]) -> None:
        if not self.enabled or time.monotonic() - self._last_s < 0.2:
            return
        self._last_s = time.monotonic()
        finished = stats["jobs_done"] + stats["dead"]
        sys.stderr.write(
            f"\r[{_bar(min(finished, self.total), self.total, '.')}] {finished}/{self.total} jobs"
            f" · {stats['pairs_per_s']:.1f} pairs/s · in flight {stats['in_flight']}"
            f" · retries {stats['retries']} · dead {stats['dead']}  "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last_s:
            sys.stderr.write("\n")


class TrainingProgress:
    """Turns the training child's progress events into lines, and a one-line bar, on stderr."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "setup":
            click.echo(
                f"dataset: {event['n_train']} train / {event['n_holdout']} holdout examples on"
                f" {event['device']} (4-bit: {event['quantize_reason']})",
                err=True,
            )
        elif kind == "step":
            self._step(event)
        elif kind == "eval_set":
            gain = event.get("tuned_nll_gain_vs_base")
            if gain is not None:
                click.echo(
                    f"eval set {event['set']}: answer NLL {100 * gain:+.1f} % vs base", err=True
                )
        elif kind == "stage":
            click.echo(f"{event['stage']}…", err=True)
        elif kind == "trial":
            click.echo(
                f"trial {event['trial']} {event['overrides']}: validation NLL"
                f" {event['validation_nll']:.4f}",
                err=True,
            )

    def _step(self, event: dict[str, Any]) -> None:
        done, total = int(event["step"]), max(int(event["max_steps"]), 1)
        trial = f"trial {event['trial']} " if event.get("trial") else ""
        line = f"{trial}[{_bar(done, total, '-')}] {done}/{total} loss {float(event['loss']):.4f}"
        if self.tty:
            click.echo("\r" + line, nl=done >= total, err=True)
        else:
            click.echo(line, err=True)
