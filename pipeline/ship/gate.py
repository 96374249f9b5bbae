"""The evaluation gate: register a run only if it beats the base and the served version.

Numbers come from the run's `metrics.json` (base vs tuned on its holdout, general-text drift,
written by training) plus, when a version is already served, that version's answer NLL on the
SAME holdout, computed in a child process (`pipeline.ship.served_eval`) so the daemon never
imports torch. `min_gain` is a relative NLL improvement; `max_drift` bounds the relative
general-text perplexity increase (forgetting).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from pipeline.settings import RegistrySettings

__all__ = ["GateError", "GateResult", "ServedNll", "child_served_nll", "evaluate_gate"]

log = structlog.get_logger(__name__)

# (served model dir, run dir[, holdout=JSONL]) -> mean answer NLL of the served model on that
# run's holdout (or on the given JSONL: the run's copy of the gate's eval set)
ServedNll = Callable[..., Awaitable[float]]


class GateError(RuntimeError):
    """The gate could not decide (the served-model evaluation or metrics.json broke)."""


@dataclass(frozen=True)
class GateResult:
    """Pass/fail with every number that decided it (stored on rejection)."""

    passed: bool
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{self.reason} {json.dumps(self.numbers, sort_keys=True)}"


async def child_served_nll(model_dir: Path, run_dir: Path, holdout: Path | None = None) -> float:
    """Run `served_eval` in a child process and return its answer NLL."""
    cmd = [sys.executable, "-m", "pipeline.ship.served_eval", str(model_dir), str(run_dir)]
    result = await anyio.run_process(cmd + ([str(holdout)] if holdout else []), check=False)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace")[-2000:]
        raise GateError(f"served-model evaluation failed (exit {result.returncode}): {tail}")
    lines = result.stdout.decode().strip().splitlines()
    try:
        return float(json.loads(lines[-1])["answer_nll"])
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise GateError(f"served-model evaluation printed no answer_nll: {lines[-1:]!r}") from exc


def _metric(metrics: dict[str, Any], *path: str) -> float:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise GateError(f"metrics.json lacks {'.'.join(path)}")
        value = value[key]
    return float(value)


async def evaluate_gate(
    metrics: dict[str, Any],
    run_dir: Path,
    reg: RegistrySettings,
    *,
    served_dir: Path | None,
    served_nll: ServedNll = child_served_nll,
) -> GateResult:
    """Decide whether the run in `run_dir` (with its `metrics`) may be registered.

    With `gate_set`, the NLL comparison uses that eval set (scored by the run, questions a
    person wrote) instead of the generated holdout; drift is always the general text's."""
    if reg.gate_set:
        where: tuple[str, ...] = ("eval_sets", reg.gate_set, "models")
        holdout: Path | None = run_dir / "evalsets" / f"{reg.gate_set}.jsonl"
    else:
        where, holdout = ("eval",), None
    tuned = _metric(metrics, *where, "tuned", "answer_nll")
    base = _metric(metrics, *where, "base", "answer_nll")
    drift = _metric(metrics, "eval", "general_ppl_drift")
    gain_base = (base - tuned) / base if base > 0 else 0.0
    numbers: dict[str, Any] = {
        "tuned_nll": round(tuned, 6),
        "base_nll": round(base, 6),
        "gain_vs_base": round(gain_base, 6),
        "drift": round(drift, 6),
        "min_gain": reg.min_gain,
        "max_drift": reg.max_drift,
        "gate_on": f"eval set {reg.gate_set}" if reg.gate_set else "holdout",
    }
    failures = []
    if gain_base < reg.min_gain:
        failures.append(f"gain vs base {gain_base:.2%} < min_gain {reg.min_gain:.2%}")
    if drift > reg.max_drift:
        failures.append(f"drift {drift:.2%} > max_drift {reg.max_drift:.2%}")
    if served_dir is not None and not failures:
        served = await (
            served_nll(served_dir, run_dir, holdout=holdout)
            if holdout is not None
            else served_nll(served_dir, run_dir)
        )
        gain_served = (served - tuned) / served if served > 0 else 0.0
        numbers.update(served_nll=round(served, 6), gain_vs_served=round(gain_served, 6))
        if gain_served < reg.min_gain:
            failures.append(f"gain vs served {gain_served:.2%} < min_gain {reg.min_gain:.2%}")
    if failures:
        return GateResult(False, "gate rejected: " + "; ".join(failures) + ".", numbers)
    return GateResult(True, "gate passed", numbers)
