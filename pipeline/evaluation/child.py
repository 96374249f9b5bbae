"""Child process for `doctune eval`: `python -m pipeline.evaluation.child REQUEST.json`.

The request names the base model, the models to compare (the run's merged model, the served
version's) and the sets (rows, with retrieval contexts when the baseline is on); the result
(one JSON object) goes to stdout, progress lines (`{"event": ...}`) before it, logs to stderr
(the protocol: `pipeline.child_process`).
Imports torch, so the CLI only ever runs it as a child.

Request: {"base_model": str, "template_vars": {}, "models": [{"label", "dir"}],
          "sets": [{"name", "rows"}], "retrieval": bool, "generate_examples": int,
          "max_new_tokens": int, "batch_size": int}
Result:  {"sets": {name: {"n", "models": {label: scores}, "gains", "examples"}}, "device"}
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.child_process import emit, emit_result, log_to_stderr

__all__ = ["evaluate_request", "main"]


def evaluate_request(request: dict[str, Any]) -> dict[str, Any]:
    """Score base (and base+retrieval) and each named model on every set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.evaluation.scoring import score_set, summarize
    from pipeline.train import base_model as bm
    from pipeline.train.render import Renderer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    template_vars = dict(request.get("template_vars") or {})
    sets = request["sets"]
    kwargs = {
        "generate_examples": int(request.get("generate_examples", 32)),
        "max_new_tokens": int(request.get("max_new_tokens", 128)),
        "batch_size": int(request.get("batch_size", 8)),
    }
    scores: dict[str, dict[str, dict[str, Any]]] = {s["name"]: {} for s in sets}

    def run(label: str, model: Any, renderer: Renderer, *, with_context: bool = False) -> None:
        for s in sets:
            emit("scoring", model=label, set=s["name"], n=len(s["rows"]))
            scores[s["name"]][label] = score_set(
                model, renderer, s["rows"], with_context=with_context, **kwargs
            )

    ref = bm.describe_base_model(request["base_model"])
    base = bm.load_base_model(ref, dtype=torch.float32)
    torch.nn.Module.to(base, device)
    base_renderer = Renderer(bm.load_tokenizer(ref), template_vars)
    run("base", base, base_renderer)
    if request.get("retrieval"):
        run("base+retrieval", base, base_renderer, with_context=True)
    del base
    gc.collect()
    for entry in request.get("models", []):
        model_dir = Path(entry["dir"])
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        torch.nn.Module.to(model, device)
        run(entry["label"], model, Renderer(tokenizer, template_vars))
        del model
        gc.collect()
    return {
        "device": device,
        "sets": {s["name"]: summarize(s["rows"], scores[s["name"]]) for s in sets},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.evaluation.child REQUEST.json", file=sys.stderr)
        return 2
    log_to_stderr()
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    emit_result(evaluate_request(request))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
