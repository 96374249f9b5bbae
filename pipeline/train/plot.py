"""The per-run PNG: training loss curve, and base vs tuned on the holdout and general text."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_run"]


def plot_run(
    out_path: Path, loss_log: Sequence[dict[str, Any]], evaluation: dict[str, Any], title: str
) -> Path:
    """Write `loss.png`: loss per step (left) and base-vs-tuned bars (right)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the child has no display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    for trial in sorted({int(r.get("trial", 0)) for r in loss_log}):
        rows = [r for r in loss_log if int(r.get("trial", 0)) == trial]
        label = f"trial {trial}" if trial else "train loss"
        ax_loss.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (answer tokens)")
    ax_loss.set_title("training loss")
    ax_loss.legend()

    base, tuned = evaluation["base"], evaluation["tuned"]
    names = ["holdout answer ppl", "general-text ppl"]
    keys = ["answer_ppl", "general_ppl"]
    if base.get("rouge_l") is not None:
        names.append("ROUGE-L ×100")
        keys.append("rouge_l")
    scale = [100.0 if k == "rouge_l" else 1.0 for k in keys]
    xs = range(len(keys))
    ax_eval.bar(
        [x - 0.2 for x in xs],
        [base[k] * s for k, s in zip(keys, scale, strict=True)],
        width=0.4,
        label="base",
    )
    ax_eval.bar(
        [x + 0.2 for x in xs],
        [tuned[k] * s for k, s in zip(keys, scale, strict=True)],
        width=0.4,
        label="tuned",
    )
    ax_eval.set_xticks(list(xs), names)
    ax_eval.set_title("base vs tuned")
    ax_eval.legend()
    fig.suptitle(title)
    fig.tight_layout()
    part = out_path.with_name(out_path.name + ".part.png")
    fig.savefig(part, dpi=100)
    plt.close(fig)
    part.replace(out_path)
    return out_path
