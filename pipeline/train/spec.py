"""The run spec: every hyperparameter of one training run, validated up front, saved as JSON."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import TrainingSettings

__all__ = [
    "PINNED_DATE",
    "SWEEP_KEYS",
    "RunSpec",
    "SpecError",
    "load_spec",
    "spec_from_settings",
    "sweep_trials",
    "training_problems",
]

# Templates that print "today" (Llama 3.x) get this date, so a rendered example is the same
# text on every run and the served template can be given the same value.
PINNED_DATE = "26 Jul 2024"
SWEEP_KEYS = ("lr", "lora_r", "epochs")
QUANTIZE_MODES = ("auto", "true", "false")
MERGE_DTYPES = ("auto", "bfloat16", "float16", "float32")


class SpecError(ValueError):
    """A run spec (or [training] section) that cannot be trained; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid training spec: " + "; ".join(problems))


_DEFAULTS = TrainingSettings()  # one source of truth for hyperparameter defaults


@dataclass(frozen=True)
class RunSpec:
    """Everything the child process needs; `spec.json` in the run directory.

    The hyperparameters mirror `[training]` (same names, same defaults); the settings-only keys
    (thresholds, sweep policy, timeouts) stay behind in the daemon.
    """

    run_id: str
    trigger: str
    base_model: str  # HF dir, hub id, or path to a .gguf file (already resolved)
    epochs: float = _DEFAULTS.epochs
    max_steps: int = _DEFAULTS.max_steps
    lr: float = _DEFAULTS.lr
    batch_size: int = _DEFAULTS.batch_size
    grad_accum: int = _DEFAULTS.grad_accum
    max_seq_len: int = _DEFAULTS.max_seq_len
    lora_r: int = _DEFAULTS.lora_r
    lora_alpha: int = _DEFAULTS.lora_alpha
    lora_dropout: float = _DEFAULTS.lora_dropout
    target_modules: list[str] = field(default_factory=lambda: list(_DEFAULTS.target_modules))
    quantize_4bit: str = _DEFAULTS.quantize_4bit
    seed: int = _DEFAULTS.seed
    sweep: dict[str, list[float]] = field(default_factory=dict)
    packing: bool = _DEFAULTS.packing
    cpu_bf16: str = _DEFAULTS.cpu_bf16
    warmup_ratio: float = _DEFAULTS.warmup_ratio
    merge_dtype: str = _DEFAULTS.merge_dtype
    eval_max_examples: int = _DEFAULTS.eval_max_examples
    eval_generate_examples: int = _DEFAULTS.eval_generate_examples
    eval_max_new_tokens: int = _DEFAULTS.eval_max_new_tokens
    template_vars: dict[str, str] = field(default_factory=lambda: {"date_string": PINNED_DATE})
    num_processes: int = 1
    distributed: str = _DEFAULTS.distributed

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def with_overrides(self, overrides: dict[str, float]) -> RunSpec:
        """A copy with sweep values applied (lora_r is an integer)."""
        fixed: dict[str, Any] = dict(overrides)
        if "lora_r" in fixed:
            fixed["lora_r"] = int(fixed["lora_r"])
        return dataclasses.replace(self, sweep={}, **fixed)


def training_problems(t: TrainingSettings | RunSpec, prefix: str = "training.") -> list[str]:
    """Every range problem in a [training] section or a spec, each naming its key."""
    p: list[str] = []

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            p.append(f"{prefix}{key}: {msg}")

    need(t.epochs > 0 or t.max_steps > 0, "epochs", "must be > 0 (or set max_steps > 0)")
    need(t.max_steps == -1 or t.max_steps > 0, "max_steps", "must be -1 (use epochs) or > 0")
    need(0 < t.lr < 1, "lr", "must be between 0 and 1")
    need(t.batch_size >= 1, "batch_size", "must be >= 1")
    need(t.grad_accum >= 1, "grad_accum", "must be >= 1")
    need(t.max_seq_len >= 32, "max_seq_len", "must be >= 32")
    need(t.lora_r >= 1, "lora_r", "must be >= 1")
    need(t.lora_alpha > 0, "lora_alpha", "must be > 0")
    need(0 <= t.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
    need(bool(t.target_modules), "target_modules", "must name at least one module")
    need(t.quantize_4bit in QUANTIZE_MODES, "quantize_4bit", f"must be one of {QUANTIZE_MODES}")
    need(t.cpu_bf16 in QUANTIZE_MODES, "cpu_bf16", f"must be one of {QUANTIZE_MODES}")
    need(t.merge_dtype in MERGE_DTYPES, "merge_dtype", f"must be one of {MERGE_DTYPES}")
    need(0 <= t.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
    need(t.eval_max_examples >= 1, "eval_max_examples", "must be >= 1")
    need(t.eval_generate_examples >= 0, "eval_generate_examples", "must be >= 0")
    need(t.eval_max_new_tokens >= 1, "eval_max_new_tokens", "must be >= 1")
    need(t.num_processes >= 0, "num_processes", "must be >= 0 (0 = one per GPU)")
    need(t.distributed in ("ddp", "fsdp"), "distributed", "must be 'ddp' or 'fsdp'")
    for key, values in t.sweep.items():
        if key not in SWEEP_KEYS:
            p.append(f"{prefix}sweep.{key}: unknown sweep key (allowed: {', '.join(SWEEP_KEYS)})")
        elif not values:
            p.append(f"{prefix}sweep.{key}: needs at least one value")
        elif any(v <= 0 for v in values):
            p.append(f"{prefix}sweep.{key}: values must be > 0")
        elif key == "lora_r" and any(v != int(v) for v in values):
            p.append(f"{prefix}sweep.lora_r: values must be integers")
    return p


def spec_from_settings(
    t: TrainingSettings, *, run_id: str, trigger: str, base_model: str, num_processes: int = 1
) -> RunSpec:
    """The spec for one run of the configured [training] section."""
    shared = {
        f.name: copy.deepcopy(getattr(t, f.name))
        for f in dataclasses.fields(RunSpec)
        if hasattr(t, f.name) and f.name not in ("run_id", "trigger", "base_model", "num_processes")
    }
    spec = RunSpec(
        run_id=run_id,
        trigger=trigger,
        base_model=base_model,
        num_processes=num_processes,
        **shared,
    )
    problems = training_problems(spec, prefix="")
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: Path) -> RunSpec:
    """Read and validate `spec.json`; unknown keys are an error (a spec from another version)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(RunSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError([f"{k}: unknown key" for k in unknown])
    try:
        spec = RunSpec(**raw)
    except TypeError as exc:
        raise SpecError([str(exc)]) from None
    problems = training_problems(spec, prefix="")
    if problems:
        raise SpecError(problems)
    return spec


def sweep_trials(spec: RunSpec) -> list[dict[str, float]]:
    """The cartesian product of the sweep values ([{}] when there is no sweep)."""
    keys = sorted(spec.sweep)
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(spec.sweep[k] for k in keys))
    ]
