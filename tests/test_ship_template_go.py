"""Invariant 6 checked by Go itself: generated Ollama templates rendered with `text/template`.

`tests/gotmpl/main.go` (standard library only) renders a template the way Ollama's template
package does for /api/chat. Every template doctune generates is rendered by it on the probe
conversations and compared with the HF chat template's text; the in-process interpreter that
guards registration (`pipeline.ship.gotemplate`) is compared with Go on the raw probes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import ship_models

from pipeline.chat_content import normalize_message_content
from pipeline.ship.gotemplate import render_go_template
from pipeline.ship.template import (
    DEFAULT_TEMPLATE_VARS,
    PROBE_CONVERSATIONS,
    OllamaPrompt,
    build_ollama_prompt,
    normalized,
    ollama_messages,
)

GOTMPL_SRC = Path(__file__).parent / "gotmpl"
WHITESPACE_PROBE = PROBE_CONVERSATIONS[3]

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None,
    reason="Go toolchain not on PATH (apt-get install golang-go; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def gotmpl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The renderer built from tests/gotmpl with the local toolchain, offline."""
    out = tmp_path_factory.mktemp("gotmpl")
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
        "CGO_ENABLED": "0",
    }
    if not any(os.environ.get(k) for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(out / "cache")
    binary = out / "gotmpl"
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=GOTMPL_SRC, env=env, check=True, timeout=300
    )
    return binary


def go_render(binary: Path, template: str, conversations: list[list[dict[str, str]]]) -> list[str]:
    request = json.dumps({"template": template, "conversations": conversations})
    done = subprocess.run(
        [str(binary)], input=request, capture_output=True, text=True, check=True, timeout=60
    )
    rendered = json.loads(done.stdout)
    assert isinstance(rendered, list)
    assert len(rendered) == len(conversations)
    return [str(text) for text in rendered]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> dict[str, Path]:
    return {
        "smollm2": ship_models.smollm2_tokenizer_dir(tmp_path_factory),
        "llama3": ship_models.tiny_llama3_dir(tmp_path_factory, corpus_dir),
    }


def generated(model_dir: Path) -> tuple[Any, OllamaPrompt]:
    """The tokenizer and the Ollama prompt registration would build for `model_dir`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    adds_bos = tokenizer("x").input_ids[0] == tokenizer.bos_token_id
    return tokenizer, build_ollama_prompt(model_dir, bos_added_by_runtime=adds_bos)


def hf_render(tokenizer: Any, conversation: list[dict[str, str]]) -> str:
    return str(
        tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False, **DEFAULT_TEMPLATE_VARS
        )
    )


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_go_renders_every_generated_template_like_the_hf_chat_template(
    which: str, models: dict[str, Path], gotmpl: Path
) -> None:
    tokenizer, prompt = generated(models[which])
    conversations = [normalized(c) for c in PROBE_CONVERSATIONS]
    served = go_render(gotmpl, prompt.template, conversations)
    for conversation, go_text in zip(conversations, served, strict=True):
        assert prompt.bos_added_by_runtime + go_text == hf_render(tokenizer, conversation)


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_the_in_process_interpreter_renders_exactly_like_go(
    which: str, models: dict[str, Path], gotmpl: Path
) -> None:
    _, prompt = generated(models[which])
    # Raw, un-normalised probes: edge whitespace, `{{ }}` text, Unicode, merged turns.
    merged_turns = [
        {"role": "user", "content": "first "},
        {"role": "user", "content": " second"},
        {"role": "system", "content": "late system"},
    ]
    conversations = [*PROBE_CONVERSATIONS, merged_turns]
    served = go_render(gotmpl, prompt.template, conversations)
    for conversation, go_text in zip(conversations, served, strict=True):
        assert render_go_template(prompt.template, ollama_messages(conversation)) == go_text


def test_normalised_content_closes_llama3_trim_gap(models: dict[str, Path], gotmpl: Path) -> None:
    tokenizer, prompt = generated(models["llama3"])
    raw, clean = WHITESPACE_PROBE, normalized(WHITESPACE_PROBE)
    raw_go, clean_go = go_render(gotmpl, prompt.template, [raw, clean])
    # Llama 3 trims content, Go cannot: raw edge whitespace would prompt the model differently.
    assert prompt.bos_added_by_runtime + raw_go != hf_render(tokenizer, raw)
    assert prompt.bos_added_by_runtime + clean_go == hf_render(tokenizer, clean)
    # Normalised text is a fixed point of `trim`, so the template's own cleaning is a no-op.
    assert all(m["content"] == m["content"].strip() for m in clean)


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_training_text_for_raw_input_is_what_ollama_serves(
    which: str, models: dict[str, Path], gotmpl: Path
) -> None:
    from pipeline.train.render import Renderer

    tokenizer, prompt = generated(models[which])
    renderer = Renderer(tokenizer, dict(DEFAULT_TEMPLATE_VARS))
    question = "\n  Qu’est-ce que {{ .Prompt }} ? 🚀\u3000\r\n"
    # What `ask` and the smoke test send: the same normalisation as training.
    sent = [{"role": "user", "content": normalize_message_content(question)}]
    (served,) = go_render(gotmpl, prompt.template, [sent])
    assert prompt.bos_added_by_runtime + served == renderer.prompt_text(question)
