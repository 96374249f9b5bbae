"""LLM calls per job and near-duplicate dead letters: the DataFusion corpus, then doc commits.

Issue 12 / DESIGN invariant 7. A copy of the DataFusion docs is ingested (all strategies) and
drained with `run --once`'s steps (reconcile → ensure_jobs → GenerationService.run_once); then
`--commits` seeded doc commits are replayed on the copy (each edits, moves, adds or deletes a
paragraph or two in one or two pages), each followed by the same three steps. Reported: chunks,
jobs, calls, calls ÷ jobs, dead jobs by reason, near_duplicate dead %, calls per commit.

    uv run python bench/bench_plan.py                       # stand-in, the generation plan
    uv run python bench/bench_plan.py --plan off            # before: one job per live chunk
    uv run python bench/bench_plan.py --ignore-asked        # stand-in ignores the asked list
    uv run python bench/bench_plan.py --backend openai --url http://127.0.0.1:8000 \\
        --model smollm2 --files 4 --commits 3               # a real model (see README)
    uv run python bench/bench_plan.py --backend llamacpp --files 6 --commits 4 \
        --concurrency 2 --timeout-s 300 --engine-threads 1  # embedded SmolLM2 (real model)
    uv run python bench/bench_plan.py --plan-cost 300       # planning time, bench_ingest tree

Every stored question and every rejected reply (with its chunk) is written to
bench/out/plan-<backend>-<plan>[-ignore]<tag>.replies.jsonl, to read what the model wrote.

With the stand-in (tests/ollama_fake/, in-process, zero latency) the figures are synthetic:
its questions are built from a sentence's key terms, and by default it follows the prompt's
list of questions already asked (an instruction-following model); `--ignore-asked` turns that
off. With `--backend openai` every request goes to a real OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pipeline.generate.plan import ensure_jobs  # noqa: E402
from pipeline.generate.prompt import prompt_version_for  # noqa: E402
from pipeline.generate.service import GenerationService  # noqa: E402
from pipeline.ingest.reconcile import reconcile  # noqa: E402
from pipeline.settings import (  # noqa: E402
    GeneratorSettings,
    PathsSettings,
    Settings,
    SourcesSettings,
)
from state import jobs as state_jobs  # noqa: E402
from state.db import Database, open_db  # noqa: E402
from state.generation_status import dead_letters  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"
REPO = "datafusion"


# ---------------------------------------------------------------------------- doc commits


def _paragraphs(text: str) -> list[str]:
    return text.split("\n\n")


def _prose(block: str) -> bool:
    stripped = block.strip()
    return (
        len(stripped) >= 120
        and not stripped.startswith(("#", "```", "|", "..", "<!--", "-", "*", "+", ">"))
        and "```" not in stripped
    )


def _edit_once(rng: random.Random, docs: list[Path], n: int) -> str:
    """Apply one seeded edit to the copy; returns what it did."""
    page = rng.choice(docs)
    blocks = _paragraphs(page.read_text(encoding="utf-8"))
    prose = [i for i, b in enumerate(blocks) if _prose(b)]
    kind = rng.choice(["edit", "edit", "add", "move", "delete"]) if prose else "add"
    if kind == "edit":
        i = rng.choice(prose)
        sentences = re.split(r"(?<=\.)\s+", blocks[i].strip())
        k = rng.randrange(len(sentences))
        sentences[k] = sentences[k].rstrip(".") + f", as of release {40 + n}."
        blocks[i] = " ".join(sentences)
    elif kind == "add":
        at = rng.randrange(len(blocks) + 1)
        blocks.insert(
            at,
            f"Release {40 + n} changes the default batch size of the scan operator to "
            f"{1024 * (n + 2)} rows and adds the `scan_batch_rows_{n}` setting to override it "
            "per session.",
        )
    elif kind == "delete":
        del blocks[rng.choice(prose)]
    else:  # move a paragraph to another page
        i = rng.choice(prose)
        moved = blocks.pop(i)
        other = rng.choice([d for d in docs if d != page])
        other_blocks = _paragraphs(other.read_text(encoding="utf-8"))
        other_blocks.insert(rng.randrange(len(other_blocks) + 1), moved)
        other.write_text("\n\n".join(other_blocks), encoding="utf-8")
    page.write_text("\n\n".join(blocks), encoding="utf-8")
    return f"{kind} {page.name}"


# ---------------------------------------------------------------------------- one pass


async def _pass(db: Database, settings: Settings, plan: bool) -> dict[str, Any]:
    """reconcile → jobs → drain, as `doctune run --once` does; the figures of this pass."""
    gen = settings.generator
    scan = await reconcile(db, settings)
    if plan:
        new_jobs = await ensure_jobs(db, gen)
    else:  # before the plan: one job per live chunk
        new_jobs = await state_jobs.ensure_jobs(
            db, prompt_version=prompt_version_for(gen), model=gen.model
        )
    dead_before = Counter(await _dead(db))
    rejected_before = Counter(await _rejected(db))
    started = time.perf_counter()
    summary = await GenerationService(db, settings).run_once()
    dead = Counter(await _dead(db)) - dead_before
    rejected = Counter(await _rejected(db)) - rejected_before
    return {
        "chunks_added": scan.chunks_added,
        "jobs": new_jobs,
        "calls": summary.calls,
        "pairs": summary.pairs_stored,
        "repairs": summary.repairs,
        "retries": summary.retries,
        "dead": dict(dead),
        "rejected": dict(rejected),  # every rejected reply (repaired or dead), by reason
        "wall_s": round(time.perf_counter() - started, 2),
    }


async def _rejected(db: Database) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT reason, COUNT(*) FROM job_events WHERE kind = 'rejected' GROUP BY reason"
    )
    return {r[0]: r[1] for r in rows}


async def _dead(db: Database) -> dict[str, int]:
    return {d["reason"]: d["count"] for d in await dead_letters(db, limit=100)}


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    jobs = row["jobs"] or 0
    dead = sum(row["dead"].values())
    near = row["dead"].get("rejected:near_duplicate", 0)
    return {
        **row,
        "calls_per_job": round(row["calls"] / jobs, 3) if jobs else None,
        "dead_pct": round(100 * dead / jobs, 2) if jobs else None,
        "near_duplicate_dead_pct": round(100 * near / jobs, 2) if jobs else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="doctune-bench-plan-"))
    repo = tmp / "sources" / REPO
    shutil.copytree(CORPUS, repo)
    if args.pages:  # only the pages matching a glob (relative to the corpus root)
        for page in [p for p in repo.rglob("*") if p.suffix in (".md", ".rst")]:
            if not page.relative_to(repo).match(args.pages):
                page.unlink()
    if args.files:  # a small slice for slow real models: N pages in name order
        pages = sorted(p for p in repo.rglob("*") if p.suffix in (".md", ".rst"))
        # first: the first N (the contributor guide); spread: every k-th, across the corpus
        step = max(1, len(pages) // args.files) if args.pick == "spread" else 1
        keep = set(pages[::step][: args.files])
        for page in pages:
            if page not in keep:
                page.unlink()
    fake = None
    url, model = args.url, args.model
    if args.backend == "standin":
        from ollama_fake import FakeOllama

        fake = FakeOllama(slots=args.concurrency).start()
        fake.avoid_asked = not args.ignore_asked
        url, model = fake.url, "llama3.2:3b"
    gen = dataclasses.replace(
        GeneratorSettings(),
        backend="ollama" if args.backend == "standin" else args.backend,
        url=url,
        model=model,
        concurrency=args.concurrency,
        timeout_s=args.timeout_s,
        outage_give_up_s=60.0,
        engine_threads=args.engine_threads,
    )
    settings = Settings(
        paths=PathsSettings(state_dir=tmp / "state"),
        sources=SourcesSettings(dir=tmp / "sources"),
        generator=gen,
    )
    plan = args.plan == "on"
    db = await open_db(settings.paths.db_path)
    try:
        cold = _ratios(await _pass(db, settings, plan))
        cold["live_chunks"] = await db.scalar("SELECT COUNT(*) FROM live_chunks")
        print(json.dumps({"phase": "corpus", **cold}), flush=True)
        rng = random.Random(args.seed)
        docs = sorted(p for p in repo.rglob("*") if p.suffix in (".md", ".rst"))
        commits = []
        for n in range(args.commits):
            edits = [_edit_once(rng, docs, n * 3 + k) for k in range(rng.randint(1, 3))]
            row = _ratios(await _pass(db, settings, plan))
            commits.append(row)
            print(json.dumps({"phase": "commit", "n": n, "edits": edits, **row}), flush=True)
        total = {
            "chunks_added": sum(c["chunks_added"] for c in commits),
            "jobs": sum(c["jobs"] for c in commits),
            "calls": sum(c["calls"] for c in commits),
            "pairs": sum(c["pairs"] for c in commits),
            "repairs": sum(c["repairs"] for c in commits),
            "retries": sum(c["retries"] for c in commits),
            "dead": dict(sum((Counter(c["dead"]) for c in commits), Counter())),
            "rejected": dict(sum((Counter(c["rejected"]) for c in commits), Counter())),
            "wall_s": round(sum(c["wall_s"] for c in commits), 2),
        }
        replay = _ratios(total)
        if commits:
            replay["calls_per_commit"] = round(total["calls"] / len(commits), 2)
            replay["chunks_added_per_commit"] = round(total["chunks_added"] / len(commits), 2)
        await _dump_replies(db, _out_name(args, "replies.jsonl"))
    finally:
        await db.close()
        if fake is not None:
            fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "backend": args.backend,
        "model": model,
        "plan": args.plan,
        "pages": {"files": args.files or "all", "pick": args.pick, "glob": args.pages},
        "standin_follows_asked_list": None if fake is None else not args.ignore_asked,
        "synthetic": fake is not None,
        "machine": {"python": platform.python_version(), "nproc": str(_nproc())},
        "corpus": cold,
        "commits": len(commits),
        "replayed_commits": replay,
    }


async def _dump_replies(db: Database, path: Path) -> None:
    """Every stored question and every rejected reply, to read what the model wrote."""
    pairs = await db.fetchall("SELECT question, answer FROM pairs ORDER BY id")
    rejected = await db.fetchall(
        "SELECT e.reason, e.detail, c.text FROM job_events e JOIN jobs j ON j.id = e.job_id"
        " JOIN chunks c ON c.id = j.chunk_id WHERE e.kind = 'rejected' ORDER BY e.id"
    )
    lines = [{"stored": q, "answer": a[:120]} for q, a in pairs]
    lines += [{"rejected": r, "detail": (d or "")[:300], "chunk": t[:200]} for r, d, t in rejected]
    _write_jsonl(path, lines)


def _write_jsonl(path: Path, lines: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def _out_name(args: argparse.Namespace, suffix: str) -> Path:
    ignore = "-ignore" if args.ignore_asked else ""
    return ROOT / "bench" / "out" / f"plan-{args.backend}-{args.plan}{ignore}{args.tag}.{suffix}"


async def plan_cost(n_files: int) -> dict[str, Any]:
    """Planning time on bench_ingest's tree (docs + `n_files` generated Rust files): cold, then
    again with nothing changed."""
    from bench_ingest import build_tree, settings_for

    from pipeline.generate.plan import plan_generation

    tmp = Path(tempfile.mkdtemp(prefix="doctune-bench-plancost-"))
    try:
        build_tree(tmp, n_files, 15_000)
        settings = settings_for(tmp)
        db = await open_db(tmp / "state" / "doctune.sqlite3")
        try:
            started = time.perf_counter()
            await reconcile(db, settings)
            reconcile_s = time.perf_counter() - started
            started = time.perf_counter()
            cold = await plan_generation(db, settings.generator)
            cold_s = time.perf_counter() - started
            started = time.perf_counter()
            await plan_generation(db, settings.generator)
            again_s = time.perf_counter() - started
            live = await db.scalar("SELECT COUNT(*) FROM live_chunks")
        finally:
            await db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "files": n_files,
        "live_chunks": live,
        "planned": cold.planned,
        "links": cold.links_added,
        "reconcile_s": round(reconcile_s, 2),
        "plan_cold_s": round(cold_s, 2),
        "plan_again_s": round(again_s, 2),
    }


def _nproc() -> int:
    import os

    return os.cpu_count() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="standin", help="standin | ollama | openai | ...")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--plan", choices=["on", "off"], default="on")
    parser.add_argument("--ignore-asked", action="store_true", help="stand-in ignores the list")
    parser.add_argument("--commits", type=int, default=30)
    parser.add_argument("--files", type=int, default=0, help="only the first N pages (0: all)")
    parser.add_argument(
        "--pick", choices=["first", "spread"], default="first", help="which --files pages"
    )
    parser.add_argument(
        "--pages",
        default="",
        help="only pages matching this glob, e.g. 'docs/source/user-guide/sql/*.md'",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-threads", type=int, default=0, help="embedded llama.cpp threads")
    parser.add_argument("--tag", default="", help="suffix of the bench/out file names")
    parser.add_argument("--plan-cost", type=int, default=0, metavar="N", help="time planning only")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.plan_cost:
        sys.path.insert(0, str(ROOT / "bench"))
        print(json.dumps(asyncio.run(plan_cost(args.plan_cost))))
        return
    result = asyncio.run(run(args))
    out = _out_name(args, "json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
