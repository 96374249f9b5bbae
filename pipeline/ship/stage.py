"""A run's version staged for a registry: its files, prompt format and Modelfile (blocking).

The embedded registry always gets a GGUF (llama.cpp loads nothing else); Ollama gets a GGUF
or the merged safetensors (`registry.mode`). The smoke-test question is the run's first
holdout question, normalised as training saw it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.chat_content import normalize_message_content
from pipeline.settings import Settings
from pipeline.ship.backends import BackendName, StagedVersion
from pipeline.ship.modelfile import VersionPrompt, write_modelfile

__all__ = ["smoke_question", "stage_version", "version_prompt"]

SAFETENSORS_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SMOKE_QUESTION = "In one sentence, what is this documentation about?"


def _stage_files(settings: Settings, run_dir: Path, backend: BackendName) -> dict[str, Path]:
    """name → local path of what the backend imports (blocking: runs in a worker thread).

    The embedded registry always gets a GGUF (llama.cpp loads nothing else)."""
    merged = run_dir / "merged"
    if settings.registry.mode == "gguf" or backend == "llamacpp":
        from pipeline.ship.gguf_export import export_gguf

        out = run_dir / "gguf" / "model-f16.gguf"
        if not out.is_file():  # the export is atomic: an existing file is complete
            export_gguf(merged, out, "f16")
        return {"model.gguf": out}
    files = {p.name: p for p in sorted(merged.glob("*.safetensors"))}
    index = merged / "model.safetensors.index.json"
    if index.is_file():
        files[index.name] = index
    for name in SAFETENSORS_FILES:
        if (merged / name).is_file():
            files[name] = merged / name
    return files


def version_prompt(run_dir: Path, metrics: dict[str, Any]) -> VersionPrompt:
    """The template and stops derived from the run's chat template (blocking)."""
    from pipeline.ship.gguf_vocab import tokenizer_adds_bos
    from pipeline.ship.template import build_ollama_prompt

    merged = run_dir / "merged"
    template_vars = dict(metrics.get("prompt", {}).get("template_vars") or {})
    prompt = build_ollama_prompt(
        merged, bos_added_by_runtime=tokenizer_adds_bos(merged), template_vars=template_vars
    )
    return VersionPrompt(prompt.template, prompt.stop, prompt.bos_added_by_runtime)


def stage_version(
    settings: Settings, run_dir: Path, metrics: dict[str, Any], tag: str, backend: BackendName
) -> StagedVersion:
    """Files, prompt, and the readable Modelfile beside them (blocking)."""
    files = _stage_files(settings, run_dir, backend)
    prompt = version_prompt(run_dir, metrics)
    if "model.gguf" in files:
        gguf = files["model.gguf"]
        modelfile = write_modelfile(gguf.parent, f"./{gguf.name}", prompt, tag=tag)
    else:
        modelfile = write_modelfile(run_dir, "./merged", prompt, tag=tag)
    return StagedVersion(files, prompt, modelfile)


def smoke_question(run_dir: Path) -> str:
    """The run's first holdout question (normalised like training), else a generic one."""
    holdout = run_dir / "dataset" / "holdout.jsonl"
    if holdout.is_file():
        for line in holdout.read_text(encoding="utf-8").splitlines():
            if line.strip():
                return normalize_message_content(str(json.loads(line)["question"]))
    return SMOKE_QUESTION
