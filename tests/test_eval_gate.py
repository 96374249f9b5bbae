"""`[registry] gate_set`: the gate reads an eval set people wrote instead of the holdout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config import ConfigError, settings_from_dict
from pipeline.settings import RegistrySettings
from pipeline.ship.gate import GateError, evaluate_gate

pytestmark = pytest.mark.anyio

METRICS: dict[str, Any] = {
    # the generated holdout says "much better" ...
    "eval": {
        "base": {"answer_nll": 2.0},
        "tuned": {"answer_nll": 1.0},
        "general_ppl_drift": 0.01,
    },
    # ... the questions a person wrote say "barely"
    "eval_sets": {
        "handwritten": {
            "models": {"base": {"answer_nll": 3.0}, "tuned": {"answer_nll": 2.97}},
        }
    },
}


async def test_gate_set_replaces_the_holdout(tmp_path: Path) -> None:
    on_holdout = await evaluate_gate(METRICS, tmp_path, RegistrySettings(), served_dir=None)
    assert on_holdout.passed
    assert on_holdout.numbers["gate_on"] == "holdout"
    on_set = await evaluate_gate(
        METRICS, tmp_path, RegistrySettings(gate_set="handwritten"), served_dir=None
    )
    assert not on_set.passed
    assert on_set.numbers["gate_on"] == "eval set handwritten"
    assert "gain vs base 1.00% < min_gain 2.00%" in on_set.reason


async def test_served_model_is_scored_on_the_same_set(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def served_nll(model_dir: Path, run_dir: Path, holdout: Path | None = None) -> float:
        seen["holdout"] = holdout
        return 2.5

    metrics = {**METRICS, "eval_sets": {"handwritten": {"models": {
        "base": {"answer_nll": 3.0}, "tuned": {"answer_nll": 2.0}}}}}  # fmt: skip
    result = await evaluate_gate(
        metrics,
        tmp_path,
        RegistrySettings(gate_set="handwritten"),
        served_dir=tmp_path / "served",
        served_nll=served_nll,
    )
    assert result.passed, result.reason
    assert seen["holdout"] == tmp_path / "evalsets" / "handwritten.jsonl"
    assert result.numbers["served_nll"] == 2.5


async def test_a_run_without_the_set_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(GateError, match=r"metrics.json lacks eval_sets.other"):
        await evaluate_gate(METRICS, tmp_path, RegistrySettings(gate_set="other"), served_dir=None)


def test_config_checks_gate_set_and_split_fractions() -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict(
            {
                "registry": {"gate_set": "nope"},
                "evaluation": {"sets": ["a/hand.jsonl", "b/hand.jsonl"], "retrieval_k": 0},
                "training": {"holdout_fraction": 0.5, "validation_fraction": 0.5},
            }
        )
    text = str(err.value)
    assert "registry.gate_set: 'nope' is not one of the [evaluation] sets (hand, hand)" in text
    assert "evaluation.sets: two sets named 'hand'" in text
    assert "evaluation.retrieval_k: must be >= 1" in text
    assert "training.validation_fraction: must be >= 0 and leave room for training" in text
    ok = settings_from_dict(
        {"registry": {"gate_set": "hand"}, "evaluation": {"sets": ["x/hand.jsonl"]}}
    )
    assert ok.registry.gate_set == "hand"
