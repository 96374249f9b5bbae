"""Ingest benchmark: cold scan+clean+chunk, unchanged rescan, one-file edit, vs langchain.

Builds (not committed) a tree of the DataFusion docs corpus plus a generated Rust-like
code tree (>= 20 MB in >= 1,300 files), then times `reconcile()` on it and
langchain-text-splitters' RecursiveCharacterTextSplitter on the same text.

    flock /tmp/doctune-heavy.lock uv run python bench/bench_ingest.py [--repeat 3] [--no-splitters]

The last block ("== summary ==") has the figures RESULTS.md quotes: cold-scan wall and
CPU-s (median, each run, and the first run, which also starts the parse pool's server),
chunks, the unchanged rescan and the one-file edit.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from pipeline.settings import Settings

# The parse pool's forkserver (spawned workers where there is none) imports this __main__
# module. Like the `doctune` entry script, it imports daemon.cli at the top and nothing else
# of doctune: the pool then pays what the CLI's pays (daemon.cli + the parsers), not for this
# harness's imports.
import daemon.cli  # noqa: E402, F401

CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"


def build_tree(dest: Path, n_files: int, file_chars: int) -> tuple[int, int]:
    """Corpus docs + generated crates; returns (files, bytes)."""
    from tests.synthetic_rust import rust_file

    repo = dest / "sources" / "bench"
    shutil.copytree(CORPUS, repo)
    crates = ["core", "expr", "physical-plan", "optimizer", "sql", "common", "functions"]
    total = 0
    for i in range(n_files):
        crate = crates[i % len(crates)]
        sub = f"mod{(i // len(crates)) % 20}"
        path = repo / "datafusion" / crate / "src" / sub / f"file_{i}.rs"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rust_file(i, file_chars))
    files = [p for p in repo.rglob("*") if p.is_file() and p.suffix in (".rs", ".md", ".rst")]
    total = sum(p.stat().st_size for p in files)
    return len(files), total


def settings_for(dest: Path) -> Settings:
    from pipeline.settings import PathsSettings, Settings, SourcesSettings

    return Settings(
        paths=PathsSettings(state_dir=dest / "state", models_dir=dest / "models"),
        sources=SourcesSettings(
            dir=dest / "sources",
            code=["datafusion/*/src/**/*.rs", "src/**/*.rs", "*.rs"],
        ),
    )


def cpu_seconds() -> float:
    """CPU time of this process and all its descendants, reaped or alive.

    The parse pool's workers are children of the pool's forkserver, which lives as long
    as this process: their time is in the server's cutime/cstime (Linux /proc), not in
    this process's RUSAGE_CHILDREN.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live_descendants_cpu()


def live_descendants_cpu() -> float:
    """utime+stime+cutime+cstime of every live descendant of this process (Linux; else 0)."""
    children: dict[int, list[tuple[int, float]]] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = sum(int(x) for x in fields[11:15]) / tick
        children.setdefault(int(fields[1]), []).append((int(entry), cpu))
    total, pending_pids = 0.0, [os.getpid()]
    while pending_pids:
        for pid, cpu in children.get(pending_pids.pop(), []):
            total += cpu
            pending_pids.append(pid)
    return total


async def timed_reconcile(settings: Settings, db_path: Path) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, summary) of one reconcile on a fresh connection."""
    from pipeline.ingest.reconcile import reconcile
    from state.db import open_db

    db = await open_db(db_path)
    try:
        cpu = cpu_seconds()
        started = time.perf_counter()
        summary = await reconcile(db, settings)
        wall = time.perf_counter() - started
        import anyio

        await anyio.sleep(0.2)  # the forkserver reaps the workers: their CPU joins its own
        return wall, cpu_seconds() - cpu, summary
    finally:
        await db.close()


def langchain_split(paths: list[Path]) -> tuple[float, int]:
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    docs = RecursiveCharacterTextSplitter(chunk_size=1500, chunk_overlap=150)
    code = RecursiveCharacterTextSplitter.from_language(
        Language.RUST, chunk_size=2000, chunk_overlap=200
    )
    texts = [(p.suffix, p.read_text(encoding="utf-8", errors="replace")) for p in paths]
    started = time.perf_counter()
    n = 0
    for suffix, text in texts:
        n += len((code if suffix == ".rs" else docs).split_text(text))
    return time.perf_counter() - started, n


def doctune_split(paths: list[Path], settings: Settings) -> tuple[float, int]:
    """clean + chunk (all five strategies) on one core, no I/O or database: like for like."""
    from pipeline.ingest.parse import chunk_text
    from pipeline.ingest.reconcile import chunk_config
    from pipeline.ingest.sources import language_for

    config = chunk_config(settings)
    texts = [(language_for(p.name), p.read_text(encoding="utf-8", errors="replace")) for p in paths]
    started = time.perf_counter()
    n = 0
    for language, text in texts:
        kind = "doc" if language in ("markdown", "rst") else "code"
        n += len(chunk_text(text, language, kind, config)[0])
    return time.perf_counter() - started, n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1400)
    parser.add_argument("--file-chars", type=int, default=15_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--no-splitters", action="store_true", help="skip the 1-core splitter comparison"
    )
    args = parser.parse_args()
    import anyio

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "?"
    )
    print(f"machine: {platform.machine()} nproc={os.cpu_count()} cpu={model}")
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="doctune-bench-") as tmp:
        dest = Path(tmp)
        n_files, n_bytes = build_tree(dest, args.files, args.file_chars)
        print(f"tree: {n_files} files, {n_bytes / 1e6:.1f} MB")
        settings = settings_for(dest)
        colds: list[tuple[float, float, int]] = []  # (wall, CPU, chunks) per cold scan
        rescans: list[float] = []
        for i in range(args.repeat):
            db_path = dest / "state" / f"cold{i}.sqlite3"
            cold, cpu, summary = anyio.run(timed_reconcile, settings, db_path)
            colds.append((cold, cpu, summary.chunks_added))  # type: ignore[attr-defined]
            rescan, _, again = anyio.run(timed_reconcile, settings, db_path)
            rescans.append(rescan)
            print(
                f"run {i}: cold {cold:.2f}s wall / {cpu:.2f}s CPU"
                f" (parsed {summary.parsed_files}, chunks +{summary.chunks_added}),"  # type: ignore[attr-defined]
                f" unchanged rescan {rescan:.3f}s (parsed {again.parsed_files})"  # type: ignore[attr-defined]
                f" load {os.getloadavg()[0]:.2f}"
            )
        target = dest / "sources" / "bench" / "datafusion" / "core" / "src" / "mod0" / "file_0.rs"
        target.write_text(target.read_text() + "\npub fn appended() {}\n")
        edit, _, summary = anyio.run(timed_reconcile, settings, dest / "state" / "cold0.sqlite3")
        edit_parsed = summary.parsed_files  # type: ignore[attr-defined]
        print(f"one-file edit rescan {edit:.3f}s parsed={edit_parsed}")
        if not args.no_splitters:
            paths = [p for p in (dest / "sources").rglob("*") if p.suffix in (".rs", ".md", ".rst")]
            lc_time, lc_chunks = langchain_split(paths)
            dt_time, dt_chunks = doctune_split(paths, settings)
            print(
                f"doctune clean+chunk, 5 strategies (1 core, no I/O/DB): {dt_time:.2f}s,"
                f" {dt_chunks} chunks"
            )
            print(
                f"langchain RecursiveCharacterTextSplitter (split only, 1 core): {lc_time:.2f}s,"
                f" {lc_chunks} chunks"
            )
        print_summary(n_files, n_bytes, colds, rescans, edit, edit_parsed)


def print_summary(
    n_files: int,
    n_bytes: int,
    colds: list[tuple[float, float, int]],
    rescans: list[float],
    edit: float,
    edit_parsed: int,
) -> None:
    """The figures RESULTS.md quotes, one per line.

    The first cold scan of a process also starts the parse pool's forkserver (what a
    one-shot `doctune scan` pays); later ones fork their workers from the running server
    (what the daemon pays). The median is over all of them, as in earlier sections.
    """
    walls = [c[0] for c in colds]
    cpus = [c[1] for c in colds]
    print(f"== summary ({n_files} files, {n_bytes / 1e6:.1f} MB, load {os.getloadavg()[0]:.2f}) ==")
    print(
        f"cold scan, median of {len(colds)}: {statistics.median(walls):.2f} s wall,"
        f" {statistics.median(cpus):.2f} CPU-s (parent + forkserver + workers),"
        f" {colds[0][2]} chunks"
    )
    print(
        f"cold scan, each run: wall {' / '.join(f'{w:.2f}' for w in walls)} s;"
        f" CPU {' / '.join(f'{c:.2f}' for c in cpus)} s"
    )
    print(
        f"cold scan, first of the process (starts the pool's server): {walls[0]:.2f} s wall,"
        f" {cpus[0]:.2f} CPU-s"
    )
    print(f"unchanged rescan, median: {statistics.median(rescans):.3f} s wall")
    print(f"one-file edit rescan: {edit:.3f} s wall ({edit_parsed} file parsed)")


if __name__ == "__main__":
    main()
