"""How the training child is started: plain `python -m`, or `accelerate launch` on several GPUs.

Torch-free (the daemon builds the command); GPUs are counted without importing torch. The
child's protocol (process group, progress lines, environment) is `pipeline.child_process`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "RECIPE_MODULE",
    "child_command",
    "resolve_num_processes",
    "visible_gpu_count",
]

RECIPE_MODULE = "pipeline.train.recipe"


def visible_gpu_count() -> int:
    """GPUs the child could use: $CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def resolve_num_processes(configured: int, gpus: int) -> int:
    """0 = one process per visible GPU (at least one); otherwise exactly what is configured."""
    return configured if configured > 0 else max(1, gpus)


def child_command(
    spec_path: Path,
    *,
    num_processes: int = 1,
    distributed: str = "ddp",
    python: str = sys.executable,
    layer_cls: str = "LlamaDecoderLayer",
) -> list[str]:
    """argv for the training child.

    One process: `python -m pipeline.train.recipe spec.json`. Several: the same module under
    `accelerate launch`, which starts one worker per GPU (torchrun rendezvous) — DDP by
    default, or FSDP sharding each decoder layer (`distributed = "fsdp"`) for bases too big
    to replicate. Trainer picks the strategy up from accelerate's environment.
    """
    recipe = ["-m", RECIPE_MODULE, str(spec_path)]
    if num_processes <= 1:
        return [python, *recipe]
    launch = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
    ]
    if distributed == "fsdp":
        launch += [
            "--use_fsdp",
            "--fsdp_sharding_strategy",
            "FULL_SHARD",
            "--fsdp_auto_wrap_policy",
            "TRANSFORMER_BASED_WRAP",
            "--fsdp_transformer_layer_cls_to_wrap",
            layer_cls,
            "--fsdp_use_orig_params",
            "true",  # LoRA: frozen and trainable params share flat parameters
        ]
    else:
        launch += ["--multi_gpu"]
    return [*launch, *recipe]
