"""TRL's SFTTrainer vs doctune's recipe only (issue 11 item 6): interleaved rounds, same data.

    uv run python bench/bench_trl_ab.py <run-dir> [--steps 12] [--rounds 3]

Each arm is one process of `bench/bench_train.py ab --arm {doctune,trl}` (its `run_arm`) on the
run's dataset (same spec, model, seed, steps); the order alternates every round so that a load
change on a shared machine falls on both arms alike. Per arm and round: real tokens/s, the mean
training loss and the holdout answer NLL of the adapter it trained (equal quality check), the
1-minute load average after it. `bench_train.py --ab-only` runs the same with two more arms (the
naive HF Trainer, doctune in fp32); this script leaves them out to halve the time on a slow
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_train import run_arm  # noqa: E402

ARMS = ("doctune", "trl")


def _arm(arm: str, run_dir: Path, steps: int, out: Path) -> dict[str, Any]:
    result = run_arm(arm, run_dir, steps, out)
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run directory (spec + dataset)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "trl_ab")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            result = _arm(arm, args.run_dir, args.steps, args.out)
            runs[arm].append(result)
            print(
                json.dumps(
                    {
                        "round": r,
                        "arm": arm,
                        "tokens_per_s": round(result["tokens_per_s"], 1),
                        "tokens": result["tokens"],
                        "padded_tokens": result["padded_tokens"],
                        "mean_loss": round(result["mean_loss"], 4),
                        "holdout_nll": round(result["holdout_nll"], 4),
                        "load": result["loadavg_1m"],
                    }
                ),
                flush=True,
            )
    summary = {
        arm: {
            "tokens_per_s_median": round(statistics.median(x["tokens_per_s"] for x in rs), 1),
            "tokens_per_s_best": round(max(x["tokens_per_s"] for x in rs), 1),
            "mean_loss": round(rs[0]["mean_loss"], 4),
            "holdout_nll": round(rs[0]["holdout_nll"], 4),
            "peak_rss_mib": max(x["peak_rss_bytes"] for x in rs) // 2**20,
        }
        for arm, rs in runs.items()
    }
    # Per round, doctune's tokens/s over TRL's (neighbours in time, so under similar load).
    ratios = [
        d["tokens_per_s"] / t["tokens_per_s"]
        for d, t in zip(runs["doctune"], runs["trl"], strict=True)
    ]
    report = {
        "run_dir": str(args.run_dir),
        "steps": args.steps,
        "rounds": runs,
        "summary": summary,
        "doctune_over_trl_per_round": [round(x, 2) for x in ratios],
    }
    (args.out / "trl_ab.json").write_text(json.dumps(report, indent=1, default=str))
    print(
        json.dumps(
            {
                "summary": summary,
                "doctune_over_trl_per_round": report["doctune_over_trl_per_round"],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
