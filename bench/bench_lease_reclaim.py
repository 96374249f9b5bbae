"""Lease reclaim after a kill: SIGKILL a real `doctune run --once` while another run goes on.

Each round: run A starts and leases jobs, run B starts, A is SIGKILLed (left unreaped, a
zombie), and we time until none of A's jobs is leased by A any more (B's periodic reclaim
frees them; `lease_s` is 300 s). Stand-in (tests/ollama_fake/): figures are synthetic.

    uv run python bench/bench_lease_reclaim.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lease_kill import (  # noqa: E402
    kill_and_time_reclaim,
    owner_gone_events,
    start_run,
    wait_for_calls,
    wait_for_leases,
)
from ollama_fake import FakeOllama  # noqa: E402
from test_generate_chaos import CHAOS_DOCS  # noqa: E402
from test_generate_cli import make_repo, write_config  # noqa: E402


def one_round(tmp: Path) -> tuple[int, float, int]:
    fake = FakeOllama(slots=8, latency_s=0.15).start()
    try:
        make_repo(tmp, CHAOS_DOCS)
        config = write_config(tmp, fake.url, concurrency=4, lease_s=300.0)
        db_path = tmp / "data" / "doctune.sqlite3"
        log = tmp / "runs.log"
        first = start_run(config, log)
        wait_for_calls(fake, 8, first)
        second = start_run(config, log)
        wait_for_leases(db_path, second.pid, second)
        wait_for_leases(db_path, first.pid, first)
        reclaim = kill_and_time_reclaim(db_path, first)
        events = owner_gone_events(db_path, first.pid)
        second.kill()
        second.wait()
        first.wait()
        return reclaim.orphaned, reclaim.reclaim_s, events
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            orphaned, seconds, events = one_round(Path(tmp))
        times.append(seconds)
        print(f"round {i + 1}: {orphaned} orphaned jobs, reclaimed in {seconds:.2f} s"
              f" ({events} owner_gone events)", flush=True)  # fmt: skip
    print(f"reclaim after SIGKILL: median {statistics.median(times):.2f} s,"
          f" max {max(times):.2f} s over {len(times)} rounds (lease_s = 300 s)")  # fmt: skip


if __name__ == "__main__":
    main()
