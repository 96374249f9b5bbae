"""Training benchmark: SmolLM2-135M-Instruct LoRA on the CPU over DataFusion Q/A pairs.

    flock /tmp/doctune-heavy.lock uv run python bench/bench_train.py [--pairs ...]

1. Pairs: from the generation pipeline run against the tests' Ollama stand-in when it is
   available (`--pairs generate`), else from a small extractive generator over the same
   corpus (`--pairs extractive`); inserted into a fresh database.
2. Quality: one real run through `run_training` (the daemon's code path, child process):
   holdout answer perplexity base vs tuned, general-text drift, the child's peak RSS.
3. Throughput A/B on the same examples, seed and number of steps, each arm in its own
   process: doctune's trainer (padding-free packing) vs a naive HF Trainer baseline with
   pad-to-longest batches vs TRL's `SFTTrainer` (conversational prompt-completion data, so
   loss on the completion only; `packing=True` with best-fit-decreasing packing, which is
   padding-free; about as many tokens per step as doctune's batch). Tokens/s counts real
   (non-padding) tokens; every arm reports its mean training loss and the holdout answer NLL
   of the adapter it trained (scored the same way), so speed is compared at equal quality.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = ("naive", "doctune-fp32", "doctune", "trl")
CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus/datafusion")


async def _extractive_into(db_path: Path, n_pairs: int) -> dict[str, Any]:
    from extractive_pairs import extractive_pairs

    from state.db import open_db
    from state.pair_import import ImportedPair, import_pairs

    pairs = extractive_pairs(CORPUS)[:n_pairs] if n_pairs else extractive_pairs(CORPUS)
    rows = [
        ImportedPair(chunk_id=f"bench-{i}", question=q, answer=a, path=path)
        for i, (q, a, path) in enumerate(pairs)
    ]
    db = await open_db(db_path)
    try:
        await import_pairs(
            db,
            rows,
            repo="datafusion",
            root=str(CORPUS),
            model="extractive",
            prompt_version="extractive",
        )
    finally:
        await db.close()
    return {
        "source": "extractive generator over the DataFusion docs (bench/extractive_pairs.py)",
        "pairs": len(pairs),
    }


def _generation_available() -> bool:
    try:
        import ollama_fake  # noqa: F401

        from pipeline.generate import service  # noqa: F401
    except ImportError:
        return False
    return True


def _generate_into(out: Path, n_files: int) -> dict[str, Any]:
    """`doctune run --once` against the Ollama stand-in, over a slice of the corpus."""
    from ollama_fake import FakeOllama

    sources = out / "sources" / "datafusion"
    files = sorted(CORPUS.rglob("*.md"))[:n_files] if n_files else sorted(CORPUS.rglob("*.md"))
    for f in files:
        dest = sources / f.relative_to(CORPUS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    fake = FakeOllama(slots=4).start()
    try:
        config = out / "doctune.toml"
        config.write_text(
            f'[paths]\nstate_dir = "{out / "data"}"\nmodels_dir = "{out / "models"}"\n'
            f'[sources]\ndir = "{out / "sources"}"\n'
            '[chunking]\nstrategies = ["heading"]\n'
            f'[generator]\nurl = "{fake.url}"\nconcurrency = 4\n'
        )
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "doctune"),
                "--config",
                str(config),
                "run",
                "--once",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"doctune run --once failed:\n{proc.stderr[-3000:]}")
        elapsed = time.monotonic() - t0
    finally:
        fake.stop()
    n = asyncio.run(_count_live_pairs(out / "data" / "doctune.sqlite3"))
    return {
        "source": f"doctune run --once (generation pipeline) against tests/ollama_fake/,"
        f" {len(files)} Markdown files",
        "pairs": n,
        "generation_s": round(elapsed, 1),
    }


async def _count_live_pairs(db_path: Path) -> int:
    from state.db import open_db
    from state.training import count_live_pairs

    db = await open_db(db_path)
    try:
        return await count_live_pairs(db)
    finally:
        await db.close()


def _settings(out: Path, args: argparse.Namespace) -> Any:
    from pipeline.settings import PathsSettings, Settings, TrainingSettings

    return Settings(
        paths=PathsSettings(state_dir=out / "data", models_dir=out / "models"),
        training=TrainingSettings(
            base_model="",  # bundled SmolLM2-135M-Instruct
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            max_seq_len=args.max_seq_len,
            lora_r=16,
            lora_alpha=32,
            holdout_fraction=0.15,
            eval_max_examples=200,
            eval_generate_examples=args.rouge_examples,
            eval_max_new_tokens=96,
        ),
    )


async def _quality_run(settings: Any) -> dict[str, Any]:
    from pipeline.train.runs import run_training
    from state.db import open_db

    db = await open_db(settings.paths.db_path)
    try:
        t0 = time.monotonic()
        last: dict[str, Any] = {}

        def progress(event: dict[str, Any]) -> None:
            if event.get("event") in {"setup", "stage", "evaluated", "done"} or (
                event.get("event") == "step" and int(event["step"]) % 10 == 0
            ):
                print(json.dumps(event), file=sys.stderr, flush=True)
            last.update(event)

        result = await run_training(db, settings, trigger="manual", progress=progress)
        wall = time.monotonic() - t0
    finally:
        await db.close()
    if result.state != "succeeded":
        raise RuntimeError(f"training failed: {result.error}")
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {
        "run_dir": str(result.run_dir),
        "wall_s": wall,
        "child_peak_rss_bytes": child_rss,
        "metrics": result.metrics,
    }


def _ab_arm(arm: str, run_dir: Path, steps: int, scratch: Path) -> dict[str, Any]:
    """One throughput arm in this process: the real recipe trainer, or the naive baseline."""
    from pipeline.train.recipe.setup import load_base, setup
    from pipeline.train.recipe.train import train_adapter
    from pipeline.train.spec import load_spec

    spec = dataclasses.replace(load_spec(run_dir / "spec.json"), max_steps=steps, sweep={})
    if arm == "doctune-fp32":
        spec = dataclasses.replace(spec, cpu_bf16="false")
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(run_dir / "dataset", scratch / "dataset")
    ctx = setup(spec, scratch)
    load_base(ctx)
    if arm.startswith("doctune"):
        summary = train_adapter(ctx, spec, scratch / "adapter", 0)
        model = ctx.tuned
    elif arm == "trl":
        summary, model = _trl_train(ctx, spec, scratch)
    else:
        summary = _naive_train(ctx, spec, scratch)
        model = ctx.base  # get_peft_model injected the trained LoRA layers in place
    summary["holdout_nll"] = _holdout_nll(model, ctx)
    summary["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return summary


def _holdout_nll(model: Any, ctx: Any) -> float:
    from pipeline.train.scores import answer_nll

    model.eval()
    total, n = answer_nll(model, ctx.holdout, batch_size=8)
    return total / max(n, 1)


def _trl_train(ctx: Any, spec: Any, scratch: Path) -> tuple[dict[str, Any], Any]:
    """TRL's SFTTrainer as its docs recommend for chat data: conversational prompt-completion
    rows (loss on the completion only), packing with best-fit decreasing (padding-free)."""
    import datasets
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from pipeline.train.batching import CountingCollator
    from pipeline.train.dataset import read_jsonl
    from pipeline.train.recipe.train import lora_config

    set_seed(spec.seed)
    rows = read_jsonl(scratch / "dataset" / "train.jsonl")
    data = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["question"].strip()}],
                "completion": [{"role": "assistant", "content": r["answer"].strip()}],
                "chat_template_kwargs": dict(ctx.renderer.template_vars),  # pinned date
            }
            for r in rows
        ]
    )
    # About as many real tokens per optimizer step as doctune's batch of `batch_size` examples.
    mean_len = sum(len(e.input_ids) for e in ctx.train) / len(ctx.train)
    per_step = max(1, round(spec.batch_size * mean_len / spec.max_seq_len))
    args = SFTConfig(
        output_dir=str(scratch / "trainer"),
        per_device_train_batch_size=per_step,
        max_steps=spec.max_steps,
        learning_rate=spec.lr,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_ratio,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec.seed,
        use_cpu=True,
        bf16=ctx.autocast_bf16,
        disable_tqdm=True,
        packing=True,
        packing_strategy="bfd",
        max_length=spec.max_seq_len,
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
        model=ctx.base,
        args=args,
        train_dataset=data,
        processing_class=ctx.tokenizer,
        peft_config=lora_config(spec),  # the adapter doctune trains
    )
    collator = CountingCollator(trainer.data_collator)  # type: ignore[arg-type]
    trainer.data_collator = collator
    result = trainer.train()
    runtime = float(result.metrics["train_runtime"])
    return {
        "steps": trainer.state.global_step,
        "rows_per_step": per_step,
        "train_runtime_s": runtime,
        "tokens": collator.tokens,
        "padded_tokens": collator.padded_tokens,
        "tokens_per_s": collator.tokens / runtime,
        "mean_loss": float(result.training_loss),
    }, trainer.model


def _naive_train(ctx: Any, spec: Any, scratch: Path) -> dict[str, Any]:
    """The baseline most tutorials write: HF Trainer + DataCollatorForSeq2Seq(padding=longest)."""
    import datasets
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from pipeline.train.batching import CountingCollator, as_features
    from pipeline.train.recipe.train import lora_config

    set_seed(spec.seed)
    model = get_peft_model(ctx.base, lora_config(spec))
    collator = CountingCollator(
        DataCollatorForSeq2Seq(
            ctx.tokenizer, padding="longest", label_pad_token_id=-100, return_tensors="pt"
        )
    )
    args = TrainingArguments(
        output_dir=str(scratch / "trainer"),
        per_device_train_batch_size=spec.batch_size,
        max_steps=spec.max_steps,
        learning_rate=spec.lr,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_ratio,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec.seed,
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    features = [{**f, "attention_mask": [1] * len(f["input_ids"])} for f in as_features(ctx.train)]
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=datasets.Dataset.from_list(features),
    )
    result = trainer.train()
    runtime = float(result.metrics["train_runtime"])
    return {
        "steps": trainer.state.global_step,
        "train_runtime_s": runtime,
        "tokens": collator.tokens,
        "padded_tokens": collator.padded_tokens,
        "tokens_per_s": collator.tokens / runtime,
        "mean_loss": float(result.training_loss),
    }


def run_arm(arm: str, run_dir: Path, steps: int, out: Path) -> dict[str, Any]:
    """One A/B arm in its own process (`ab --arm ARM`); its JSON result line."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "ab",
            "--arm",
            arm,
            "--run-dir",
            str(run_dir),
            "--steps",
            str(steps),
            "--scratch",
            str(out / f"ab-{arm}"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"A/B arm {arm} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _ab(run_dir: Path, steps: int, rounds: int, out: Path) -> dict[str, Any]:
    """Every arm `rounds` times, alternating the order so load drift favours no arm."""
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for r in range(rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            result = run_arm(arm, run_dir, steps, out)
            result["loadavg_1m"] = os.getloadavg()[0]
            runs[arm].append(result)
            print(
                json.dumps({"arm": arm, "round": r, "tokens_per_s": result["tokens_per_s"]}),
                file=sys.stderr,
                flush=True,
            )
    best = {arm: max(x["tokens_per_s"] for x in runs[arm]) for arm in ARMS}
    naive = runs["naive"][0]
    return {
        "steps": steps,
        "rounds": runs,
        "tokens_per_s": {arm: round(v, 1) for arm, v in best.items()},  # best of the rounds
        "speedup": {arm: round(best[arm] / best["naive"], 2) for arm in ARMS[1:]},
        "padding_fraction_naive": round(1 - naive["tokens"] / naive["padded_tokens"], 3),
        "mean_loss": {arm: round(runs[arm][0]["mean_loss"], 4) for arm in ARMS},
        "holdout_nll": {arm: round(runs[arm][0]["holdout_nll"], 4) for arm in ARMS},
        "peak_rss_mib": {arm: max(x["peak_rss_bytes"] for x in runs[arm]) // 2**20 for arm in ARMS},
    }


def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    arm = sub.add_parser("ab")
    arm.add_argument("--arm", choices=ARMS, required=True)
    arm.add_argument("--run-dir", type=Path, required=True)
    arm.add_argument("--steps", type=int, required=True)
    arm.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--pairs", choices=["auto", "generate", "extractive"], default="auto")
    parser.add_argument("--n-pairs", type=int, default=320, help="extractive: first N pairs")
    parser.add_argument(
        "--n-files", type=int, default=27, help="generate: first N .md files (0 = all)"
    )
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=384)
    parser.add_argument("--rouge-examples", type=int, default=16)
    parser.add_argument("--ab-steps", type=int, default=12)
    parser.add_argument("--ab-rounds", type=int, default=2, help="A/B rounds, order alternating")
    parser.add_argument("--ab-only", type=Path, default=None, help="A/B on an existing run dir")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "train")
    args = parser.parse_args()

    if args.cmd == "ab":
        print(json.dumps(_ab_arm(args.arm, args.run_dir, args.steps, args.scratch)))
        return 0
    if args.ab_only is not None:
        ab = _ab(args.ab_only, args.ab_steps, args.ab_rounds, args.out)
        ab["machine"] = _machine()
        (args.out / "ab.json").write_text(json.dumps(ab, indent=2, default=str))
        print(json.dumps({k: ab[k] for k in ("tokens_per_s", "speedup", "peak_rss_mib")}))
        return 0

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    report: dict[str, Any] = {"machine": _machine()}
    t0 = time.monotonic()
    use_generation = args.pairs == "generate" or (args.pairs == "auto" and _generation_available())
    if use_generation:
        report["data"] = _generate_into(out, args.n_files)
    else:
        report["data"] = asyncio.run(
            _extractive_into(out / "data" / "doctune.sqlite3", args.n_pairs)
        )
    print(json.dumps(report["data"]), file=sys.stderr, flush=True)
    settings = _settings(out, args)
    quality = asyncio.run(_quality_run(settings))
    report["quality"] = quality
    run_dir = Path(quality["run_dir"])
    report["ab"] = _ab(run_dir, args.ab_steps, args.ab_rounds, out)
    report["total_s"] = time.monotonic() - t0
    report["machine"]["loadavg_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    ev = quality["metrics"]["eval"]
    train = quality["metrics"]["train"]
    print(
        json.dumps(
            {
                "pairs": report["data"]["pairs"],
                "n_train": quality["metrics"]["dataset"]["n_train"],
                "n_holdout": quality["metrics"]["dataset"]["n_holdout"],
                "steps": train["steps"],
                "train_tokens_per_s": round(train["tokens_per_s"], 1),
                "ab_tokens_per_s": report["ab"]["tokens_per_s"],
                "ab_speedup": report["ab"]["speedup"],
                "ab_padding_fraction_naive": report["ab"]["padding_fraction_naive"],
                "peak_rss_mib": {
                    "child": quality["child_peak_rss_bytes"] // 2**20,
                    **report["ab"]["peak_rss_mib"],
                },
                "answer_ppl": [
                    round(ev["base"]["answer_ppl"], 3),
                    round(ev["tuned"]["answer_ppl"], 3),
                ],
                "ppl_reduction_pct": round(100 * ev["holdout_ppl_reduction"], 1),
                "rouge_l": [ev["base"]["rouge_l"], ev["tuned"]["rouge_l"]],
                "general_ppl": [
                    round(ev["base"]["general_ppl"], 3),
                    round(ev["tuned"]["general_ppl"], 3),
                ],
                "drift_pct": round(100 * ev["general_ppl_drift"], 2),
                "run_wall_s": round(quality["wall_s"], 1),
                "timings_s": quality["metrics"]["timings_s"],
                "total_s": round(report["total_s"], 1),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
