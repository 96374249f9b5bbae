"""Generation throughput against the Ollama stand-in (run in its own process).

For each (slots S, latency L) the stand-in holds every request for L seconds in one of S
slots; the service runs with concurrency S. Ideal throughput is S/L pairs/s; we report
pairs/s ÷ (S/L). With L = 0 the figure is the pipeline's own ceiling (prompt → HTTP →
validate → SQLite commit → JSONL export).

    flock /tmp/doctune-heavy.lock uv run python bench/bench_generate.py [--chunks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pipeline.generate.plan import ensure_jobs  # noqa: E402
from pipeline.generate.service import GenerationService  # noqa: E402
from pipeline.settings import GeneratorSettings, PathsSettings, Settings  # noqa: E402
from state.db import open_db  # noqa: E402
from state.file_changes import FileChange, apply_changes  # noqa: E402
from state.files import ensure_repo  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"
DEFAULT_CASES = [(16, 0.0), (8, 0.1), (8, 0.25), (4, 0.25)]
CHUNKS_PER_FILE = 50

# The stand-in asks about a sentence's key terms; chunks are picked with its own public rules
# (`ollama_fake.pairs`) so that no two share them and its questions never collide.
from ollama_fake.pairs import key_terms, sentences  # noqa: E402


def bench_chunks(count: int) -> list[str]:
    """`count` distinct chunks of 1–3 whole sentences (≥ 60 chars) from the corpus docs.

    No sentence appears twice and no two chunks share the stand-in's question key terms, so
    every reply is a valid pair: the benchmark measures the pipeline, not content rejections.
    """
    units: list[str] = []
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix not in (".md", ".rst"):
            continue
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            text = " ".join(block.split())
            boilerplate = re.search(r"licen[cs]e|copyright|warrant", text, re.IGNORECASE)
            if text.startswith(("```", "|", "..", "<!--", "-->", "+")) or boilerplate:
                continue
            units += sentences(text)
    chunks, buf, seen, terms_seen = [], [], set(), set()
    for unit in units:
        terms = frozenset(t.lower() for t in key_terms(unit))
        if unit in seen or terms in terms_seen or len(terms) < 3:
            continue
        seen.add(unit)
        terms_seen.add(terms)
        buf.append(unit)
        if sum(len(x) for x in buf) >= 60:
            chunks.append(" ".join(buf))
            buf = []
            if len(chunks) == count:
                return chunks
    raise SystemExit(f"the corpus yields only {len(chunks)} chunks; ask for fewer")


async def seed(db_path: Path, texts: list[str]) -> None:
    """One live doc file per 50 texts, each text a paragraph chunk (`state.files`, as ingest)."""
    import hashlib

    changes = []
    for i in range(0, len(texts), CHUNKS_PER_FILE):
        rows = [
            ("paragraph", j, hashlib.sha256(text.encode()).hexdigest(), text, j * 3 + 1,
             j * 3 + 2, None)
            for j, text in enumerate(texts[i : i + CHUNKS_PER_FILE])
        ]  # fmt: skip
        changes.append(
            FileChange(path=f"docs/f{i:05d}.md", action="chunks", kind="doc", chunks=rows)
        )
    db = await open_db(db_path)
    try:
        await ensure_repo(db, "bench", "/bench")
        await apply_changes(db, "bench", changes)
    finally:
        await db.close()


def start_fake(slots: int, latency_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_fake", "--slots", str(slots),
         "--latency-s", str(latency_s)],
        cwd=ROOT / "tests",
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


async def one_case(texts: list[str], slots: int, latency_s: float) -> dict[str, float]:
    proc, url = start_fake(slots, latency_s)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_path = Path(tmp) / "doctune.sqlite3"
            await seed(db_path, texts)
            gen = dataclasses.replace(
                GeneratorSettings(), url=url, concurrency=slots, timeout_s=60.0
            )
            settings = Settings(paths=PathsSettings(state_dir=Path(tmp)), generator=gen)
            db = await open_db(db_path)
            await ensure_jobs(db, gen)
            started = time.perf_counter()
            summary = await GenerationService(db, settings).run_once()
            wall_s = time.perf_counter() - started
            await db.close()
    finally:
        proc.terminate()
        proc.wait()
    pairs_per_s = summary.pairs_stored / wall_s
    ideal = slots / latency_s if latency_s else float("inf")
    return {
        "slots": slots,
        "latency_s": latency_s,
        "chunks": len(texts),
        "pairs": summary.pairs_stored,
        "calls": summary.calls,
        "dead": summary.dead,
        "wall_s": round(wall_s, 2),
        "pairs_per_s": round(pairs_per_s, 1),
        "calls_per_s": round(summary.calls / wall_s, 1),
        "ideal_pairs_per_s": ideal,
        "ratio": round(pairs_per_s / ideal, 3) if latency_s else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--case", action="append", default=None, help="S:L, e.g. 8:0.1")
    args = parser.parse_args()
    cases = [
        (int(c.split(":")[0]), float(c.split(":")[1])) for c in args.case
    ] if args.case else DEFAULT_CASES  # fmt: skip
    texts = bench_chunks(args.chunks)
    for slots, latency_s in cases:
        print(json.dumps(asyncio.run(one_case(texts, slots, latency_s))), flush=True)


if __name__ == "__main__":
    main()
