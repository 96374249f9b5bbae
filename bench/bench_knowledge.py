"""Knowledge bench: does training teach the docs? train → eval on eval sets, vs base+retrieval.

    uv run python bench/bench_knowledge.py --db data/doctune.sqlite3 [--sets a.jsonl ...]
    uv run python bench/bench_knowledge.py --extractive [--pages P ...] [--grid ...]

`--db`: a doctune database with generated pairs (e.g. written by the real generator): its live
pairs are trained on as `doctune train` would (chunk split, held-out pages excluded) and its
chunks feed the BM25 retrieval baseline. The database is copied first; the original is not
touched.

`--extractive`: the stand-in data: the corpus is scanned into a fresh database (chunks for
retrieval) and `bench/extractive_pairs.paragraph_pairs` writes pairs whose answers are the
docs' own sentences for `--pages` (default: five pages that hand-written questions are about);
the hand-written set is also cut down to those pages' questions (`<name>-pages`).

In `--db` mode the whole corpus is also scanned into the copy (heading chunks), so the BM25
baseline searches all pages as `doctune eval` does, and each set gets a `-pages` cut: the
questions whose `source` is a page the database has live pairs for (what training could teach).

Every grid point (epochs or steps × target modules; `all:2,12` = epochs, `all:s8,s16` =
max_steps) is one real run through `run_training` (the daemon's code path, child process) with
`[evaluation] sets`; the holdout figures (K1 answer perplexity, K2 ROUGE-L, K3 general-text
drift) and base, base+retrieval (first point only: it does not depend on training) and tuned
answer NLL per set are printed as a table and written to `<out>/knowledge.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = Path("/work/shared/corpus/datafusion")
HANDWRITTEN = Path("/work/shared/eval/datafusion-questions.jsonl")
FIVE_PAGES = [
    "docs/source/user-guide/expressions.md",
    "docs/source/library-user-guide/table-constraints.md",
    "docs/source/user-guide/cli/usage.md",
    "docs/source/user-guide/dataframe.md",
    "docs/source/download.md",
]
TARGETS = {
    "attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def _settings(out: Path, args: argparse.Namespace, sets: list[Path]) -> Any:
    from pipeline.settings import (
        ChunkingSettings,
        EvaluationSettings,
        PathsSettings,
        RepoSettings,
        Settings,
        SourcesSettings,
        TrainingSettings,
    )

    return Settings(
        paths=PathsSettings(state_dir=out / "data", models_dir=out / "models"),
        sources=SourcesSettings(
            dir=None,
            repo=[RepoSettings("datafusion", CORPUS, docs=["docs/**/*.md", "docs/**/*.rst"])],
        ),
        chunking=ChunkingSettings(strategies=["heading"]),
        training=TrainingSettings(
            lr=args.lr,
            batch_size=args.batch_size,
            max_seq_len=args.max_seq_len,
            holdout_fraction=args.holdout_fraction,
            validation_fraction=0.0,
            eval_max_examples=64,
            eval_generate_examples=args.generate,
            eval_max_new_tokens=48,
        ),
        evaluation=EvaluationSettings(
            sets=sets, retrieval_baseline=True, retrieval_k=2, holdout_globs=args.holdout_glob
        ),
    )


async def _build_extractive(settings: Any, out: Path, pages: list[str], variants: int) -> int:
    from extractive_pairs import paragraph_pairs

    from pipeline.ingest.reconcile import reconcile
    from state.db import open_db
    from state.pair_import import ImportedPair, import_pairs

    db = await open_db(settings.paths.db_path)
    try:
        await reconcile(db, settings)  # real chunks: what retrieval searches
        pairs = paragraph_pairs(CORPUS, pages, variants=variants)
        rows = [
            ImportedPair(chunk_id=f"extractive-{group}", question=q, answer=a, path=path)
            for q, a, path, group in pairs
        ]
        await import_pairs(
            db,
            rows,
            repo="datafusion",
            root=str(CORPUS),
            model="extractive",
            prompt_version="extractive",
        )
        return len(pairs)
    finally:
        await db.close()


def _subset(src: Path, pages: list[str], dest: Path) -> Path:
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    keep = [r for r in rows if r.get("source") in pages]
    dest.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return dest


async def _prepare_db(settings: Any, src: Path, only: list[str]) -> list[str]:
    """Copy `src`, scan the whole corpus into the copy (retrieval's chunks), keep only the pairs
    of the pages in `only` (when given), return the pages that have live pairs."""
    from pipeline.ingest.reconcile import reconcile
    from state.db import now, open_db

    shutil.copy2(src, settings.paths.db_path)
    db = await open_db(settings.paths.db_path)
    try:
        await reconcile(db, settings)
        if only:
            async with db.write() as conn:
                marks = ",".join("?" * len(only))
                await conn.execute(
                    f"UPDATE pairs SET retired_at = ? WHERE retired_at IS NULL"
                    f" AND path NOT IN ({marks})",
                    (now(), *only),
                )
        rows = await db.fetchall(
            "SELECT DISTINCT path FROM pairs WHERE retired_at IS NULL ORDER BY path"
        )
        return [r[0] for r in rows]
    finally:
        await db.close()


def _faq(settings: Any, dest: Path) -> Path:
    from pipeline.evaluation.faq import harvest_repos
    from pipeline.evaluation.sets import write_set

    write_set(dest, [p.as_row() for p in harvest_repos(settings)])
    return dest


async def _run(settings: Any) -> dict[str, Any]:
    from pipeline.train.runs import run_training
    from state.db import open_db

    db = await open_db(settings.paths.db_path)
    try:
        t0 = time.monotonic()
        result = await run_training(db, settings, trigger="manual")
        wall = time.monotonic() - t0
    finally:
        await db.close()
    if result.state != "succeeded" or result.metrics is None:
        raise RuntimeError(f"training failed: {result.error}")
    if result.run_dir is not None:
        shutil.rmtree(result.run_dir / "merged", ignore_errors=True)  # not needed here
    return {"wall_s": round(wall, 1), "metrics": result.metrics}


def _row(point: dict[str, Any]) -> list[str]:
    m = point["metrics"]
    ev = m["eval"]
    rouge = ev.get("rouge_l_delta")
    cells = [
        point["targets"],
        f"{point['epochs']:g}",
        str(m["train"]["steps"]),
        f"loss {m['train']['mean_loss']:.3f}",
        f"holdout ppl {ev['base']['answer_ppl']:.2f} → {ev['tuned']['answer_ppl']:.2f}"
        f" ({-100 * ev['holdout_ppl_reduction']:+.1f}%)",
        f"ROUGE-L {'-' if rouge is None else f'{rouge:+.3f}'}",
        f"drift {100 * ev['general_ppl_drift']:+.1f}%",
    ]
    for name, s in sorted(m["eval_sets"].items()):
        models = s["models"]
        gain = 100 * s["gains"]["tuned_nll_gain_vs_base"]
        cells.append(
            f"{name}: base {models['base']['answer_nll']:.3f} → tuned "
            f"{models['tuned']['answer_nll']:.3f} ({gain:+.1f}%)"
            + (
                f", base+retrieval {models['base+retrieval']['answer_nll']:.3f}"
                if "base+retrieval" in models
                else ""
            )
        )
    cells.append(f"{point['wall_s']:.0f}s")
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", type=Path, help="a doctune database with generated pairs")
    src.add_argument("--extractive", action="store_true", help="stand-in pairs (see docstring)")
    parser.add_argument("--pages", nargs="*", default=FIVE_PAGES)
    parser.add_argument(
        "--pair-pages", nargs="*", default=[], help="--db: train only on these pages' pairs"
    )
    parser.add_argument("--variants", type=int, default=2, help="extractive: questions/answer")
    parser.add_argument("--sets", nargs="*", type=Path, default=None)
    parser.add_argument("--grid", default="attn:2,6,12;all:2,12", help="targets:epochs;...")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--holdout-fraction", type=float, default=0.05)
    parser.add_argument("--holdout-glob", nargs="*", default=[])
    parser.add_argument("--generate", type=int, default=0, help="greedy answers per set")
    parser.add_argument(
        "--no-retrieval", action="store_true", help="skip base+retrieval (already measured)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "knowledge")
    args = parser.parse_args()

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    sets = list(args.sets) if args.sets is not None else []
    settings = _settings(out, args, sets)
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "points": []}
    if args.extractive:
        report["pairs"] = asyncio.run(
            _build_extractive(settings, out, list(args.pages), args.variants)
        )
        if args.sets is None:
            sets = [
                HANDWRITTEN,
                _subset(HANDWRITTEN, list(args.pages), out / "handwritten-pages.jsonl"),
                _faq(settings, out / "faq.jsonl"),
            ]
    else:
        pages = asyncio.run(_prepare_db(settings, args.db, list(args.pair_pages)))
        report["pages"] = pages
        if args.sets is None:
            faq = _faq(settings, out / "faq.jsonl")
            sets = [
                HANDWRITTEN,
                _subset(HANDWRITTEN, pages, out / "handwritten-pages.jsonl"),
                faq,
                _subset(faq, pages, out / "faq-pages.jsonl"),
            ]
    import dataclasses

    print(
        json.dumps(
            {
                "pairs": report.get("pairs"),
                "pages": report.get("pages"),
                "sets": [str(s) for s in sets],
            }
        ),
        flush=True,
    )
    first = not args.no_retrieval
    for spec in args.grid.split(";"):
        targets, epochs_list = spec.split(":")
        for value in epochs_list.split(","):
            steps = int(value[1:]) if value.startswith("s") else -1
            epochs = 1.0 if steps > 0 else float(value)
            point_settings = dataclasses.replace(
                settings,
                training=dataclasses.replace(
                    settings.training,
                    epochs=epochs,
                    max_steps=steps,
                    target_modules=TARGETS[targets],
                ),
                evaluation=dataclasses.replace(
                    settings.evaluation, sets=sets, retrieval_baseline=first
                ),
            )
            first = False
            point = {
                "targets": targets,
                "epochs": epochs,
                "max_steps": steps,
                **asyncio.run(_run(point_settings)),
            }
            report["points"].append(point)
            print(" | ".join(_row(point)), flush=True)
            (out / "knowledge.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
