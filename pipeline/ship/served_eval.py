"""Child process: answer NLL of an already-served model on a new run's holdout set.

    python -m pipeline.ship.served_eval MODEL_DIR RUN_DIR  →  {"answer_nll": ..., "tokens": ...}

The gate compares the tuned model against the version Ollama serves now on the SAME
holdout questions, rendered and scored exactly as training scored the tuned model (its
Renderer, template variables and teacher-forced answer NLL). Imports torch, so the daemon
only ever runs it as a child process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def served_answer_nll(
    model_dir: Path, run_dir: Path, *, batch_size: int = 8, holdout: Path | None = None
) -> dict[str, Any]:
    """Mean per-token answer NLL of `model_dir` on `run_dir`'s holdout (or on `holdout`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.train.dataset import read_jsonl
    from pipeline.train.render import Renderer
    from pipeline.train.scores import answer_nll

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    template_vars = dict(metrics.get("prompt", {}).get("template_vars") or {})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    renderer = Renderer(tokenizer, template_vars)
    rows = read_jsonl(holdout or run_dir / "dataset" / "holdout.jsonl")
    examples = [renderer.render(str(r["question"]), str(r["answer"])) for r in rows]
    if not examples:
        raise SystemExit(f"{run_dir}: empty holdout, nothing to compare on")
    # float32 like the training scorer's CPU path; on a GPU box just faster, same numbers.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.nn.Module.to(model, "cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    total, count = answer_nll(model, examples, batch_size=batch_size)
    return {"answer_nll": total / max(1, count), "tokens": count, "examples": len(examples)}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(
            "usage: python -m pipeline.ship.served_eval MODEL_DIR RUN_DIR [SET.jsonl]",
            file=sys.stderr,
        )
        return 2
    holdout = Path(argv[2]) if len(argv) == 3 else None
    result = served_answer_nll(Path(argv[0]), Path(argv[1]), holdout=holdout)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
