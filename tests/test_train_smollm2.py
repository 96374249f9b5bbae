"""The real small model: SmolLM2-135M-Instruct (bundled GGUF, dequantized) trains on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_support import insert_pairs, qa_pairs

from pipeline.settings import PathsSettings, Settings, TrainingSettings
from pipeline.train.runs import run_training
from state.db import open_db

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_smollm2_trains_a_few_steps_and_merges(tmp_path: Path) -> None:
    settings = Settings(
        paths=PathsSettings(state_dir=tmp_path / "data", models_dir=tmp_path / "models"),
        training=TrainingSettings(
            base_model="",  # the bundled SmolLM2-135M-Instruct GGUF
            max_steps=2,
            batch_size=2,
            max_seq_len=256,
            holdout_fraction=0.25,
            eval_max_examples=4,
            eval_generate_examples=2,
            eval_max_new_tokens=8,
        ),
    )
    db = await open_db(settings.paths.db_path)
    try:
        await insert_pairs(db, qa_pairs(24))
        result = await run_training(db, settings, trigger="manual")
    finally:
        await db.close()
    assert result.state == "succeeded", result.error
    assert result.run_dir is not None
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["base_model"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert metrics["prompt"]["end_of_turn"] == "<|im_end|>"
    ev = metrics["eval"]
    assert 1.0 < ev["base"]["answer_ppl"] < 1e4  # a real, trained model: not random
    config = json.loads((result.run_dir / "merged" / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
