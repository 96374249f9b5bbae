"""Invariant 6: the Ollama template renders conversations exactly as the training template."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import ship_models

from pipeline.ship.gotemplate import render_go_template
from pipeline.ship.template import TemplateError, build_ollama_prompt, ollama_messages

CONVERSATION = [
    {"role": "system", "content": "You answer questions about Apache DataFusion."},
    {"role": "user", "content": "What is a `TableProvider`?"},
    {"role": "assistant", "content": "A trait that lets DataFusion scan a custom table."},
    {"role": "user", "content": "How do I register one?\nWith a SessionContext?"},
]


@pytest.fixture(scope="module")
def smollm2_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ship_models.smollm2_tokenizer_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def llama3_tok(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    return ship_models.tiny_llama3_dir(tmp_path_factory, corpus_dir)


@pytest.mark.parametrize("conversation", [CONVERSATION, CONVERSATION[1:2], CONVERSATION[1:]])
@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_ollama_template_renders_the_training_conversation_identically(
    which: str,
    conversation: list[dict[str, str]],
    smollm2_tok: Path,
    llama3_tok: Path,
) -> None:
    from transformers import AutoTokenizer

    model_dir = smollm2_tok if which == "smollm2" else llama3_tok
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    adds_bos = tokenizer("x").input_ids[0] == tokenizer.bos_token_id
    hf_text = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False, date_string="26 Jul 2024"
    )
    prompt = build_ollama_prompt(model_dir, bos_added_by_runtime=adds_bos)
    go_text = render_go_template(prompt.template, ollama_messages(conversation))
    assert prompt.bos_added_by_runtime + go_text == hf_text
    # And token for token, with the BOS the runtime adds:
    hf_ids = tokenizer(hf_text, add_special_tokens=False).input_ids
    served_ids = tokenizer(go_text, add_special_tokens=adds_bos).input_ids
    assert served_ids == hf_ids


def test_stop_strings_are_the_turn_markers(smollm2_tok: Path, llama3_tok: Path) -> None:
    assert build_ollama_prompt(smollm2_tok, bos_added_by_runtime=False).stop == [
        "<|im_end|>",
        "<|im_start|>",
    ]
    llama3 = build_ollama_prompt(llama3_tok, bos_added_by_runtime=True)
    assert llama3.stop == ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    assert llama3.bos_added_by_runtime == "<|begin_of_text|>"
    assert "<|begin_of_text|>" not in llama3.template


def test_a_template_ollama_cannot_express_is_refused(smollm2_tok: Path, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(smollm2_tok, odd)
    # Numbers each turn: no fixed per-role prefix exists, so no Go template can match it.
    (odd / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ loop.index }}] {{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    with pytest.raises(TemplateError):
        build_ollama_prompt(odd, bos_added_by_runtime=False)


def test_go_renderer_follows_go_trim_and_range_semantics() -> None:
    template = (
        "{{- if .System }}S={{ .System }};{{ end }}\n"
        '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}U{{ $i }}={{ .Content }};'
        "{{- else }}A={{ $m.Content }};{{ end }}{{ end }}  \n{{- /* comment */ -}}  !"
    )
    values = ollama_messages(CONVERSATION)
    assert render_go_template(template, values) == (
        "S=You answer questions about Apache DataFusion.;"
        "A=You answer questions about Apache DataFusion.;"
        "U1=What is a `TableProvider`?;A=A trait that lets DataFusion scan a custom table.;"
        "U3=How do I register one?\nWith a SessionContext?;!"
    )
