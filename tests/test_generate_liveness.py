"""Leases of a killed run are freed within seconds: owner locks, periodic reclaim."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lease_kill import (
    kill_and_time_reclaim,
    owner_gone_events,
    start_run,
    wait_for_calls,
    wait_for_leases,
)
from ollama_fake import FakeOllama
from test_generate_chaos import CHAOS_DOCS
from test_generate_cli import make_repo, write_config

from pipeline.generate.liveness import owner_alive, owner_lock
from state import jobs as state_jobs
from state.db import now, open_db

HOLD_LOCK = """
import sys, time
from pathlib import Path
from pipeline.generate.liveness import owner_lock
with owner_lock(Path(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:abcd1234"


def _hold_lock_in_child(locks: Path, owner: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(locks), owner],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "locked\n"
    return child


def test_owner_whose_lock_is_held_is_alive(tmp_path: Path) -> None:
    child = _hold_lock_in_child(tmp_path, _owner(12345))
    try:
        assert owner_alive(tmp_path, _owner(12345))
    finally:
        child.kill()
        child.wait()


def test_killed_owner_is_dead_even_as_an_unreaped_zombie(tmp_path: Path) -> None:
    owner = _owner(os.getpid())  # a pid that is certainly alive: only the lock can tell
    child = _hold_lock_in_child(tmp_path, owner)
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        os.kill(child.pid, 0)  # the zombie still answers a signal 0: the old check said alive
        assert not owner_alive(tmp_path, owner)
        assert not any(tmp_path.iterdir())  # the dead owner's lock file is cleaned up
    finally:
        child.wait()


def test_own_lock_reads_alive_and_is_removed_on_exit(tmp_path: Path) -> None:
    owner = _owner(os.getpid())
    with owner_lock(tmp_path, owner) as lock:
        assert owner_alive(tmp_path, owner)
        assert lock.path.exists()
    assert not lock.path.exists()


def test_owner_without_lock_file_falls_back_to_its_pid(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert owner_alive(tmp_path, _owner(os.getpid()))
    assert not owner_alive(tmp_path, _owner(child.pid))
    assert owner_alive(tmp_path, "otherhost:1:abcd")  # another machine: cannot tell


@pytest.mark.anyio
async def test_reclaim_frees_orphaned_and_expired_leases_with_reasons(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "db.sqlite3")
    try:
        at = now()
        async with db.write() as conn:
            await conn.execute(
                "INSERT INTO chunks (id, text, n_chars, created_at) VALUES ('c', 't', 1, ?)", (at,)
            )
            rows = [
                (1, "dead:1:a#x", at + 300),  # owner gone
                (2, "live:2:b#y", at - 1),  # owner alive, lease expired
                (3, "live:2:b#z", at + 300),  # owner alive, lease running
            ]
            await conn.executemany(
                "INSERT INTO jobs (id, chunk_id, prompt_version, model, state, claim_token,"
                " lease_expires_at, created_at, updated_at)"
                " VALUES (?, 'c', ?, 'm', 'leased', ?, ?, 0, 0)",
                [(i, f"v{i}", token, expires) for i, token, expires in rows],
            )
        released = await state_jobs.release_orphaned_leases(db, lambda o: o.startswith("dead"))
        assert released == 2
        states = {row[0]: row[1] for row in await db.fetchall("SELECT id, state FROM jobs")}
        assert states == {1: "pending", 2: "pending", 3: "leased"}
        events = await db.fetchall("SELECT job_id, reason FROM job_events ORDER BY job_id")
        assert [tuple(e) for e in events] == [(1, "owner_gone"), (2, "lease_expired")]
    finally:
        await db.close()


@pytest.mark.slow
def test_a_killed_run_s_jobs_are_taken_over_within_seconds(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    """Real process tree: SIGKILL `run --once` (left unreaped) while another run goes on,
    then again with the next run started after the kill; lease_s is 300 s."""
    ollama_fake.slots = 8
    ollama_fake.latency_s = 0.15
    make_repo(tmp_path, CHAOS_DOCS)
    config = write_config(tmp_path, ollama_fake.url, concurrency=4, lease_s=300.0)
    db_path = tmp_path / "data" / "doctune.sqlite3"
    log = tmp_path / "runs.log"
    victims: list[subprocess.Popen[bytes]] = []
    try:
        # 1. a second run is going on when the first is killed: its periodic reclaim frees them
        first = start_run(config, log)
        victims.append(first)
        wait_for_calls(ollama_fake, 8, first)
        second = start_run(config, log)
        wait_for_leases(db_path, second.pid, second)
        wait_for_leases(db_path, first.pid, first)
        during = kill_and_time_reclaim(db_path, first, give_up_s=30)
        assert during.orphaned > 0
        assert during.reclaim_s < 15, during  # was lease_s (300 s) when the check was fooled
        assert owner_gone_events(db_path, first.pid) == during.orphaned
        # 2. kill the second too; the next run, started after the kill, frees them at start
        wait_for_leases(db_path, second.pid, second)
        victims.append(second)
        os.kill(second.pid, signal.SIGKILL)
        orphaned = owner_gone_events(db_path, second.pid)
        third = start_run(config, log)
        assert third.wait(timeout=300) == 0, log.read_text()[-3000:]
        assert owner_gone_events(db_path, second.pid) > orphaned
    finally:
        for proc in victims:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    with sqlite3.connect(db_path) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    assert states.get("leased", 0) == states.get("pending", 0) == 0, states
    assert not list((tmp_path / "data" / "owners").iterdir())  # every lock file cleaned up
