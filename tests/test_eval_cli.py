"""`doctune eval --set` and `[evaluation] sets`: every run reports the sets; base, tuned and
base+retrieval side by side (a tiny random model; the numbers are not the point here)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from train_support import build_tiny_model, insert_pairs, qa_pairs

from daemon.cli import main
from daemon.config import load_config
from pipeline.ingest.reconcile import reconcile
from state.db import open_db

pytestmark = pytest.mark.slow

GUIDE = """# SessionContext

The SessionContext is the entry point that registers tables and runs SQL queries.

# Parquet

Parquet is a columnar file format with row groups and statistics.
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp())


def _config(tmp_path: Path, tiny: Path) -> Path:
    docs = tmp_path / "sources" / "demo" / "docs"
    docs.mkdir(parents=True)
    (docs / "guide.md").write_text(GUIDE)
    evset = tmp_path / "hand.jsonl"
    evset.write_text(
        "\n".join(
            json.dumps({"question": q, "answer": a, "source": "docs/guide.md"})
            for q, a in [
                ("What is the SessionContext for?", "It registers tables and runs SQL."),
                ("What is Parquet?", "A columnar file format with row groups."),
                ("Does Parquet keep statistics?", "Yes, per row group."),
            ]
        )
        + "\n"
    )
    config = tmp_path / "doctune.toml"
    config.write_text(
        f"""
[paths]
state_dir = "data"
models_dir = "models"
[sources]
dir = "sources"
docs = ["docs/*.md"]
code = []
[training]
base_model = "{tiny}"
max_steps = 2
batch_size = 4
lr = 0.005
holdout_fraction = 0.25
validation_fraction = 0.1
eval_max_examples = 8
eval_generate_examples = 2
eval_max_new_tokens = 4
[evaluation]
sets = ["hand.jsonl"]
retrieval_baseline = true
retrieval_k = 1
generate_examples = 2
max_new_tokens = 4
"""
    )
    return config


def test_every_run_reports_the_sets_and_eval_compares_models(
    tmp_path: Path, tiny_dir: Path
) -> None:
    config = _config(tmp_path, tiny_dir)
    settings, _ = load_config(config)

    async def seed() -> None:
        db = await open_db(settings.paths.db_path)
        try:
            await reconcile(db, settings)
            await insert_pairs(db, qa_pairs(40))
        finally:
            await db.close()

    anyio.run(seed)
    trained = CliRunner().invoke(main, ["--config", str(config), "train"])
    assert trained.exit_code == 0, trained.output
    assert "eval set hand (3 questions): answer perplexity base" in trained.output
    (run_dir,) = [p for p in (settings.paths.models_dir / "runs").iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    hand = metrics["eval_sets"]["hand"]
    assert set(hand["models"]) == {"base", "base+retrieval", "tuned"}
    assert hand["n"] == 3
    assert hand["models"]["tuned"]["answer_tokens"] > 0
    assert "tuned_nll_gain_vs_base+retrieval" in hand["gains"]
    copied = [
        json.loads(x) for x in (run_dir / "evalsets" / "hand.jsonl").read_text().split("\n") if x
    ]
    assert "SessionContext" in copied[0]["contexts"][0]["text"]  # BM25 from the state
    runs = CliRunner().invoke(main, ["--config", str(config), "runs"])
    assert "eval set hand: ppl base" in runs.output

    out = CliRunner().invoke(
        main, ["--config", str(config), "eval", "--set", str(tmp_path / "hand.jsonl"), "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["run_id"] == run_dir.name
    models = result["sets"]["hand"]["models"]
    assert set(models) == {"base", "base+retrieval", "tuned"}
    # the merged model scores the same as the in-run adapter (same weights, same prompts)
    assert models["tuned"]["answer_nll"] == pytest.approx(
        hand["models"]["tuned"]["answer_nll"], rel=1e-3
    )
    example = result["sets"]["hand"]["examples"][0]
    assert set(example["answers"]) == {"base", "base+retrieval", "tuned"}

    table = CliRunner().invoke(main, ["--config", str(config), "eval", "--no-retrieval"])
    assert table.exit_code == 0, table.output
    assert "set hand (3 questions)" in table.output
    assert "base+retrieval" not in table.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?"}\n')
    refused = CliRunner().invoke(main, ["--config", str(config), "eval", "--set", str(bad)])
    assert refused.exit_code == 1
    assert "bad.jsonl:1: 'answer' must be a non-empty string" in (refused.output)
