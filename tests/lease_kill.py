"""Kill a real `doctune run --once` mid-run and time how long its leases stay orphaned.

Shared by tests/test_generate_liveness.py (bounds) and bench/bench_lease_reclaim.py (figures).
The killed process is deliberately NOT reaped until the end: a zombie still answers
`kill(pid, 0)`, which is how the old liveness check was fooled.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ollama_fake import FakeOllama

ROOT = Path(__file__).resolve().parents[1]


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`doctune run --once` as its own process (the real CLI entry point)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from daemon.cli import main; main()",
             "--config", str(config), "run", "--once"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )  # fmt: skip


def owner_prefix(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:"


def leased_by(db_path: Path, pid: int) -> set[int]:
    """Ids of the jobs whose lease belongs to process `pid`."""
    with sqlite3.connect(db_path, timeout=30) as conn:
        rows = conn.execute(
            "SELECT id FROM jobs WHERE state = 'leased' AND claim_token LIKE ?",
            (owner_prefix(pid) + "%",),
        ).fetchall()
    return {row[0] for row in rows}


def wait_for_calls(fake: FakeOllama, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(fake.generation_calls()) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {count} calls")
        time.sleep(0.01)


def wait_for_leases(db_path: Path, pid: int, proc: subprocess.Popen[bytes]) -> set[int]:
    deadline = time.monotonic() + 60
    while not (jobs := leased_by(db_path, pid)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the run to kill never held a lease")
        time.sleep(0.01)
    return jobs


@dataclass
class Reclaim:
    orphaned: int  # jobs the killed run held
    reclaim_s: float  # from the kill until none of them is leased by the dead run any more


def kill_and_time_reclaim(
    db_path: Path, victim: subprocess.Popen[bytes], give_up_s: float = 600.0
) -> Reclaim:
    """SIGKILL `victim` (not reaped) and wait until another run has taken all its leases."""
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    orphaned = leased_by(db_path, victim.pid)
    while leased_by(db_path, victim.pid):
        if time.monotonic() - killed_at > give_up_s:
            raise AssertionError(f"orphaned leases still held {give_up_s:.0f} s after the kill")
        time.sleep(0.02)
    return Reclaim(len(orphaned), time.monotonic() - killed_at)


def owner_gone_events(db_path: Path, pid: int) -> int:
    with sqlite3.connect(db_path, timeout=30) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM job_events WHERE reason = 'owner_gone' AND detail LIKE ?",
            (owner_prefix(pid) + "%",),
        ).fetchone()
    return int(count)
