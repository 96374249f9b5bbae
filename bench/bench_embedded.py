"""Generation with the embedded llama.cpp engine on real DataFusion docs: yield per mode, speed.

For each mode (`qa`, `backtranslate`) it ingests a subset of the corpus into a fresh state
dir, runs one `run --once`-equivalent drain on the default generator (the bundled
SmolLM2-135M-Instruct GGUF), and reports pairs/s, accepted-pair yield (pairs per job and per
call) and every reject reason. Then it replays the exact requests doctune sent, one at a time,
straight to a fresh engine, so completion tokens/s of the engine alone can be compared with
tokens/s through doctune (the overhead ratio; engine start-up excluded from both).

    uv run python bench/bench_embedded.py [--files 1] [--sections 0] [--max-jobs 0]
        [--replay 6] [--modes qa,backtranslate] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.clients.llamacpp import LlamaServer  # noqa: E402
from pipeline.generate.backend import embedded_spec, resolve_backend  # noqa: E402
from pipeline.generate.plan import ensure_jobs  # noqa: E402
from pipeline.generate.service import GenerationService  # noqa: E402
from pipeline.ingest.reconcile import reconcile  # noqa: E402
from pipeline.settings import (  # noqa: E402
    ChunkingSettings,
    GeneratorSettings,
    PathsSettings,
    Settings,
    SourcesSettings,
)
from state.db import open_db  # noqa: E402
from state.jobs import trim_pending_jobs  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"
# Prose-heavy pages of the library user guide, in this order; --files takes the first n.
SUBSET = [
    "docs/source/library-user-guide/catalogs.md",
    "docs/source/library-user-guide/profiling.md",
    "docs/source/library-user-guide/table-constraints.md",
    "docs/source/library-user-guide/extending-operators.md",
    "docs/source/library-user-guide/query-optimizer.md",
]
REPLAY_MAX = 6  # requests replayed to the engine alone (a rate needs no more)


def _settings(tmp: Path, mode: str) -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp / "data", models_dir=tmp / "models"),
        sources=SourcesSettings(dir=tmp / "sources", docs=["docs/**/*.md"], code=[]),
        chunking=ChunkingSettings(strategies=["heading"]),
        # a long reply from a starved 2-core CPU can take minutes: time out only real hangs
        generator=dataclasses.replace(
            GeneratorSettings(),
            backend="llamacpp",
            mode=mode,  # type: ignore[arg-type]
            timeout_s=900.0,
            lease_s=1200.0,
        ),
    )


def _copy_subset(tmp: Path, files: int, sections: int) -> list[str]:
    """The first `files` pages of SUBSET; with `sections`, only each page's first n `## `
    sections (the heading chunker makes about one job per section)."""
    chosen = SUBSET[:files]
    for rel in chosen:
        target = tmp / "sources" / "datafusion" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if sections:
            parts = (CORPUS / rel).read_text(encoding="utf-8").split("\n## ")
            target.write_text("\n## ".join(parts[: sections + 1]), encoding="utf-8")
        else:
            shutil.copy(CORPUS / rel, target)
    return [f"{rel} (first {sections} sections)" if sections else rel for rel in chosen]


async def _doctune_run(
    settings: Settings, max_jobs: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One drain through doctune; returns its figures and the request bodies it sent."""
    sent: list[dict[str, Any]] = []
    db = await open_db(settings.paths.db_path)
    try:
        await reconcile(db, settings)
        jobs = await ensure_jobs(db, settings.generator)
        if max_jobs and jobs > max_jobs:  # the first chunks only (lowest job ids)
            await trim_pending_jobs(db, keep=max_jobs)
            jobs = max_jobs
        service = GenerationService(db, settings, trace_configs=[_recorder(sent)])
        summary = await service.run_once()
        events = await db.fetchall(
            "SELECT kind, reason, COUNT(*) FROM job_events GROUP BY kind, reason"
            " ORDER BY COUNT(*) DESC"
        )
        dead = await db.fetchall(
            "SELECT dead_reason, COUNT(*) FROM jobs WHERE state = 'dead' GROUP BY dead_reason"
        )
        samples = await db.fetchall("SELECT question, answer FROM pairs ORDER BY id LIMIT 6")
    finally:
        await db.close()
    gen_s = summary.duration_s - summary.engine_start_s
    figures = {
        "jobs": jobs,
        "calls": summary.calls,
        "pairs": summary.pairs_stored,
        "dead": summary.dead,
        "repairs": summary.repairs,
        "yield_per_job": round(summary.pairs_stored / jobs, 3) if jobs else 0.0,
        "yield_per_call": round(summary.pairs_stored / summary.calls, 3) if summary.calls else 0,
        "engine_start_s": round(summary.engine_start_s, 2),
        "generation_s": round(gen_s, 2),
        "pairs_per_s": round(summary.pairs_stored / gen_s, 4),
        "completion_tokens": summary.completion_tokens,
        "tokens_per_s_doctune": round(summary.completion_tokens / gen_s, 2),
        "rejects": {f"{k}:{r}": n for k, r, n in events if k in ("rejected", "truncated")},
        "dead_reasons": {r: n for r, n in dead},
        "samples": [{"q": q, "a": a[:160]} for q, a in samples],
    }
    return figures, sent


def _recorder(sent: list[dict[str, Any]]) -> aiohttp.TraceConfig:
    """aiohttp's request hook: keeps the JSON body of every chat completion doctune sends."""
    trace = aiohttp.TraceConfig()

    async def on_chunk(
        _session: Any, _ctx: Any, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        if params.url.path.endswith("/chat/completions") and params.chunk:
            sent.append(json.loads(params.chunk))

    trace.on_request_chunk_sent.append(on_chunk)
    return trace


async def _engine_alone(
    gen: GeneratorSettings, sent: list[dict[str, Any]], replay: int
) -> dict[str, Any]:
    """The same requests, sequentially, straight to a fresh engine (no doctune in between)."""
    async with LlamaServer(embedded_spec(gen, None)) as engine:
        tokens = 0
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            for body in sent[:replay]:
                async with session.post(
                    f"{engine.base_url}/v1/chat/completions", json={**body, "stream": False}
                ) as resp:
                    reply = await resp.json()
                tokens += int((reply.get("usage") or {}).get("completion_tokens") or 0)
        elapsed = time.perf_counter() - started
    return {
        "requests": min(len(sent), replay),
        "completion_tokens": tokens,
        "seconds": round(elapsed, 2),
        "tokens_per_s_engine": round(tokens / elapsed, 2),
    }


async def bench(
    files: int, sections: int, modes: list[str], max_jobs: int, replay: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"doctune-bench-{mode}-") as name:
            tmp = Path(name)
            chosen = _copy_subset(tmp, files, sections)
            settings = _settings(tmp, mode)
            figures, sent = await _doctune_run(settings, max_jobs)
            resolved = (await resolve_backend(settings.generator)).gen
            if replay:
                alone = await _engine_alone(resolved, sent, replay)
                figures["engine_alone"] = alone
                figures["overhead_ratio"] = round(
                    figures["tokens_per_s_doctune"] / alone["tokens_per_s_engine"], 3
                )
            figures["files"] = chosen
            figures["model"] = resolved.model
            results[mode] = figures
            print(json.dumps({mode: figures}, indent=1, ensure_ascii=False), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--sections", type=int, default=0, help="0 = whole pages")
    parser.add_argument("--modes", default="qa,backtranslate")
    parser.add_argument("--max-jobs", type=int, default=0, help="0 = every chunk's job")
    parser.add_argument(
        "--replay", type=int, default=REPLAY_MAX, help="requests replayed to the engine alone"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = asyncio.run(
        bench(args.files, args.sections, args.modes.split(","), args.max_jobs, args.replay)
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
