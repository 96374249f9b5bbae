"""The training recipe, run in the child: `python -m pipeline.train.recipe <run-dir>/spec.json`.

Stages, one module each, in the order `run.run_recipe` calls them:
setup (validate, tokenizer, rendered splits) → train (LoRA, or 4-bit QLoRA on CUDA; `sweep`
for several trials) → evaluate (base vs tuned) → merge (into a float base) → report (plot,
metrics.json) → rename `<id>.tmp` to `<id>`. Every stage skips when its output exists, so
re-running a crashed run resumes it. Progress goes to stdout (`pipeline.child_process`).
"""
