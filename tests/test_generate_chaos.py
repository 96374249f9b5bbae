"""Chaos: SIGKILL `doctune run --once` at random points, restart, and lose nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ollama_fake import FakeOllama
from test_generate_cli import make_repo, write_config

CHAOS_DOCS = [
    f"docs/source/{name}.md"
    for name in (
        "contributor-guide/architecture",
        "contributor-guide/communication",
        "contributor-guide/governance",
        "contributor-guide/howtos",
        "contributor-guide/index",
        "contributor-guide/inviting",
        "contributor-guide/roadmap",
        "contributor-guide/testing",
        "library-user-guide/building-logical-plans",
        "library-user-guide/catalogs",
        "library-user-guide/custom-table-providers",
        "library-user-guide/extending-operators",
        "library-user-guide/query-optimizer",
        "library-user-guide/working-with-exprs",
    )
]
KILLS = 12
CONCURRENCY = 4


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`doctune run --once` as its own process (the real CLI entry point)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from daemon.cli import main; main()",
             "--config", str(config), "run", "--once"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip


def kill_at_a_random_point(
    proc: subprocess.Popen[bytes], fake: FakeOllama, rng: random.Random
) -> None:
    """Half the kills after a random delay (may hit start-up or reconcile), half once the
    stand-in has seen a random number of new calls (always mid-generation)."""
    deadline = time.monotonic() + 60
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.2, 2.0))
    else:
        target = len(fake.calls) + rng.randint(1, 30)
        while len(fake.calls) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkilled_runs_lose_no_pair_and_duplicate_few_calls(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    rng = random.Random(20261125)
    ollama_fake.slots = CONCURRENCY
    ollama_fake.latency_s = 0.08
    make_repo(tmp_path, CHAOS_DOCS)
    config = write_config(tmp_path, ollama_fake.url, concurrency=CONCURRENCY, lease_s=600.0)
    log = tmp_path / "runs.log"
    kills = 0
    for _ in range(KILLS):
        proc = start_run(config, log)
        kill_at_a_random_point(proc, ollama_fake, rng)
        kills += proc.returncode == -signal.SIGKILL
    final = start_run(config, log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert kills >= 10

    db_path = tmp_path / "data" / "doctune.sqlite3"
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (live_chunks,) = conn.execute("SELECT COUNT(*) FROM live_chunks").fetchone()
        # markdown pages only: the plan asks about their paragraph chunks (invariant 7)
        (planned,) = conn.execute(
            "SELECT COUNT(DISTINCT m.chunk_id) FROM memberships m JOIN files f"
            " ON f.id = m.file_id WHERE f.status = 'live' AND m.strategy = 'paragraph'"
        ).fetchone()
        states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        (pairs, distinct_jobs) = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM pairs"
        ).fetchone()
        (pairs_per_chunk_max,) = conn.execute(
            "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM pairs GROUP BY chunk_id)"
        ).fetchone()
        (done_without_pair,) = conn.execute(
            "SELECT COUNT(*) FROM jobs j WHERE j.state = 'done'"
            " AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.job_id = j.id)"
        ).fetchone()
        (needed_calls,) = conn.execute(
            "SELECT COALESCE(SUM(1 + repairs + attempts), 0) FROM jobs"
        ).fetchone()
    assert live_chunks >= 300
    assert 100 <= planned < live_chunks
    # every planned chunk ended done or dead-lettered; nothing left behind, nothing stuck leased
    assert states.get("pending", 0) == states.get("leased", 0) == 0
    assert states.get("done", 0) + states.get("dead", 0) == planned
    # 0 pairs lost, 0 duplicates: every done job has its one pair, no chunk has two
    assert done_without_pair == 0
    assert pairs == distinct_jobs == states["done"]
    assert pairs_per_chunk_max == 1
    exported = (tmp_path / "data" / "datafusion_qa.jsonl").read_text().splitlines()
    assert len(exported) == pairs
    assert len({json.loads(line)["question"] for line in exported}) == pairs
    # a kill can repeat only the calls that were in flight, at most `concurrency` of them
    calls = len(ollama_fake.generation_calls())
    duplicates = calls - needed_calls
    assert 0 <= duplicates <= CONCURRENCY * kills, (calls, needed_calls, kills, live_chunks)
