"""Daemon benchmarks: save → first generator request latency, and idle RSS/CPU.

Runs a real `doctune run` process on a copy of the DataFusion corpus against the Ollama
stand-in (zero model latency, so the figure is doctune's own overhead: watch debounce,
stat+hash, re-chunk, job creation, claim, HTTP). Run it alone on the machine:

    flock /tmp/doctune-heavy.lock uv run python bench/bench_daemon.py [--edits 50] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_proc import DaemonProcess, daemon_config, free_port, sql, wait_until  # noqa: E402
from ollama_fake import FakeOllama  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "datafusion"


def _drained(db: Path) -> bool:
    busy, total = sql(db, "SELECT SUM(state IN ('pending', 'leased')), COUNT(*) FROM jobs")[0]
    return bool(total) and not busy


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _machine() -> dict[str, str]:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "?"
    )
    return {"nproc": str(psutil.cpu_count()), "cpu": model, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--debounce-ms", type=int, default=200)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="doctune-bench-daemon-"))
    repo = tmp / "sources" / "datafusion"
    shutil.copytree(CORPUS, repo)
    fake = FakeOllama(slots=4).start()
    port = free_port()
    config = daemon_config(
        tmp,
        fake.url,
        port,
        generator={"concurrency": 4},
        watch={"debounce_ms": args.debounce_ms},
        daemon={"log_level": "warning"},
    )
    db = tmp / "state" / "doctune.sqlite3"
    started = time.monotonic()
    daemon = DaemonProcess(tmp, config, port)
    try:
        daemon.wait_ready(300)
        ready_s = time.monotonic() - started
        wait_until(lambda: _drained(db), 900, "initial generation drained")
        drained_s = time.monotonic() - started
        proc = psutil.Process(daemon.proc.pid)
        docs = sorted(p for p in repo.rglob("*.md"))
        rng = random.Random(0)
        latencies: list[float] = []
        for i in range(args.edits):
            target = rng.choice(docs)
            before = len(fake.calls)  # the call log only grows
            with target.open("a", encoding="utf-8") as f:
                f.write(
                    f"\n\nEdit {i}: the benchmark paragraph {i} explains how partition {i} "
                    f"streams record batch {i * 7} through the planner and optimizer.\n"
                )
            saved = time.time()

            def content_calls(b: int = before) -> list[float]:
                return [c.started_at for c in fake.calls[b:] if c.chunk_sha is not None]

            wait_until(lambda: bool(content_calls()), 30, f"a request for edit {i}")
            first = min(content_calls())
            latencies.append(first - saved)
            wait_until(lambda: _drained(db), 60, "edit drained")
            time.sleep(0.3)
        time.sleep(5)  # let the last edit settle before measuring idle
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        rss_samples = []
        while time.monotonic() - wall0 < args.idle_s:
            rss_samples.append(proc.memory_info().rss)
            time.sleep(1)
        cpu1, wall1 = proc.cpu_times(), time.monotonic()
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        status = daemon.status()
        result = {
            "machine": _machine(),
            "corpus_files": len(list(repo.rglob("*"))),
            "live_chunks": status.get("chunks", {}).get("live"),
            "startup_ready_s": round(ready_s, 2),
            "initial_generation_drained_s": round(drained_s, 2),
            "edits": len(latencies),
            "save_to_first_request_ms": {
                "p50": round(statistics.median(latencies) * 1000, 1),
                "p95": round(_percentile(latencies, 0.95) * 1000, 1),
                "max": round(max(latencies) * 1000, 1),
                "min": round(min(latencies) * 1000, 1),
            },
            "debounce_ms": args.debounce_ms,
            "idle_window_s": round(wall1 - wall0, 1),
            "idle_cpu_percent": round(100 * cpu_s / (wall1 - wall0), 3),
            "idle_rss_mb": round(statistics.median(rss_samples) / 2**20, 1),
            "max_rss_mb": round(status["daemon"]["process"]["max_rss_bytes"] / 2**20, 1),
            "heavy_modules_loaded": status["daemon"]["process"]["heavy_modules_loaded"],
        }
        assert daemon.stop() == 0
    finally:
        daemon.close()
        fake.stop()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "daemon.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
