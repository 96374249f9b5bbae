"""Ollama's `template` + `parameters.stop`, derived from the exact HF chat template of training.

DESIGN invariant 6: the registered model must see prompts formatted exactly as its training
examples were. Rather than hand-writing a Go template per model family, we render the HF
(Jinja) chat template on sentinel conversations, cut the output into the per-role pieces
(system block, user/assistant prefixes and suffixes, generation prompt, the default block
used when there is no system message), and assemble an Ollama Messages-style Go template
from them. The result is then rendered with Go semantics (`pipeline.ship.gotemplate`) on
probe conversations and must reproduce the HF text exactly, or the build fails loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.chat_content import normalize_message_content
from pipeline.ship.gotemplate import render_go_template

__all__ = [
    "DEFAULT_TEMPLATE_VARS",
    "PROBE_CONVERSATIONS",
    "OllamaPrompt",
    "TemplateError",
    "build_ollama_prompt",
    "load_chat_template",
    "normalized",
    "ollama_messages",
    "render_hf_chat",
]

# Llama 3.x templates print today's date unless `date_string` is given; training pins it.
DEFAULT_TEMPLATE_VARS: dict[str, Any] = {"date_string": "26 Jul 2024"}
_S, _U1, _A1, _U2 = "SYSTEMx7f3a", "USERONEx7f3a", "ASSISTANTx7f3a", "USERTWOx7f3a"


class TemplateError(ValueError):
    """The chat template cannot be expressed as an Ollama Go template."""


@dataclass(frozen=True)
class OllamaPrompt:
    """What the create request needs: the Go template, stop strings, and the BOS caveat."""

    template: str
    stop: list[str]
    bos_added_by_runtime: str  # BOS text the tokenizer prepends (removed from the template)


def _special_tokens(model_dir: Path) -> dict[str, str]:
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    tokens: dict[str, str] = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens


def load_chat_template(model_dir: Path) -> str:
    """The chat template saved with the tokenizer (chat_template.jinja or tokenizer_config)."""
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = model_dir / "tokenizer_config.json"
    if config_file.is_file():
        template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    raise TemplateError(f"{model_dir}: no chat template (chat_template.jinja / tokenizer_config)")


def render_hf_chat(
    template: str,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool,
    special_tokens: dict[str, str],
    template_vars: dict[str, Any] | None = None,
) -> str:
    """Render like transformers' apply_chat_template(tokenize=False) (same Jinja settings)."""
    from jinja2.exceptions import TemplateError as JinjaError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    variables = {**DEFAULT_TEMPLATE_VARS, **(template_vars or {})}
    pinned = variables.get("date_string")

    def strftime_now(fmt: str) -> str:
        # Pinned like training: a template asking for "today" gets the training date.
        return str(pinned) if pinned else datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(
        x, ensure_ascii=False, indent=indent
    )
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
            **variables,
        )
    except JinjaError as exc:
        raise TemplateError(f"chat template failed to render: {exc}") from exc


def _between(text: str, start: str | None, end: str | None) -> str:
    lo = text.index(start) + len(start) if start else 0
    hi = text.index(end, lo) if end else len(text)
    return text[lo:hi]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise TemplateError(f"chat template is not turn-based ({what}: {text!r} / {prefix!r})")
    return text[len(prefix) :]


def _derive_pieces(render: Any) -> dict[str, str]:
    full = render([("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2)], True)
    user_suffix = _between(render([("system", _S), ("user", _U1)], False), _U1, None)
    asst_suffix = _between(
        render([("system", _S), ("user", _U1), ("assistant", _A1)], False), _A1, None
    )
    asst_prefix = _strip_prefix(_between(full, _U1, _A1), user_suffix, "assistant prefix")
    user_prefix = _strip_prefix(_between(full, _A1, _U2), asst_suffix, "user prefix")
    gen_prompt = _strip_prefix(_between(full, _U2, None), user_suffix, "generation prompt")
    sys_and_user = _between(full, _S, _U1)
    if not sys_and_user.endswith(user_prefix):
        raise TemplateError("chat template's system block does not end before the user prefix")
    no_system = _between(render([("user", _U1)], True), None, _U1)
    if not no_system.endswith(user_prefix):
        raise TemplateError("chat template renders a first user turn differently")
    return {
        "sys_prefix": _between(full, None, _S),
        "sys_suffix": sys_and_user[: len(sys_and_user) - len(user_prefix)],
        "default_block": no_system[: len(no_system) - len(user_prefix)],
        "user_prefix": user_prefix,
        "user_suffix": user_suffix,
        "asst_prefix": asst_prefix,
        "asst_suffix": asst_suffix,
        "gen_prompt": gen_prompt,
    }


def _go_literal(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise TemplateError("chat template literal text contains '{{' or '}}'")
    return text


def _assemble(p: dict[str, str]) -> str:
    g = {k: _go_literal(v) for k, v in p.items()}
    # One line, no trim markers: every byte of the literal pieces is significant.
    return (
        f"{{{{ if .System }}}}{g['sys_prefix']}{{{{ .System }}}}{g['sys_suffix']}"
        f"{{{{ else }}}}{g['default_block']}{{{{ end }}}}"
        "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f'{{{{ if eq $m.Role "user" }}}}{g["user_prefix"]}{{{{ $m.Content }}}}{g["user_suffix"]}'
        f"{{{{ if $last }}}}{g['gen_prompt']}{{{{ end }}}}"
        f'{{{{ else if eq $m.Role "assistant" }}}}{g["asst_prefix"]}{{{{ $m.Content }}}}'
        f"{{{{ if not $last }}}}{g['asst_suffix']}{{{{ end }}}}"
        "{{ end }}{{ end }}"
    )


def _stop_strings(model_dir: Path, pieces: dict[str, str]) -> list[str]:
    tokenizer_file = model_dir / "tokenizer.json"
    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [a["content"] for a in added if a.get("special")]
    # Turn markers only: the system block is left out so a leading BOS is not a stop.
    turn_keys = ("asst_suffix", "user_prefix", "user_suffix", "asst_prefix", "gen_prompt")
    order = "".join(pieces[k] for k in turn_keys)
    found = [s for s in specials if s in order]
    return sorted(found, key=order.index)


# Conversations as a user or the pipeline might send them: whitespace at the edges,
# template-looking text and Unicode included. Entry points normalise content first
# (`pipeline.chat_content`), and so does the proof below.
PROBE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What does `ListingTable` do?"}],
    [
        {"role": "system", "content": "You answer questions about DataFusion."},
        {"role": "user", "content": "How do I register a CSV file?"},
        {"role": "assistant", "content": "Use `ctx.register_csv(name, path, options)`."},
        {"role": "user", "content": "And Parquet?"},
    ],
    [
        {"role": "user", "content": "Define a logical plan."},
        {"role": "assistant", "content": "A tree of relational operators."},
        {"role": "user", "content": "Thanks!\nOne more: physical plan?"},
    ],
    [
        {"role": "system", "content": "  Answer briefly.\n"},
        {"role": "user", "content": "\n  What is a `SessionContext`?  \r\n"},
        {"role": "assistant", "content": "\tIt holds the session state.\n\n"},
        {"role": "user", "content": " \u00a0And `SessionState`?\u3000"},
    ],
    [
        {"role": "user", "content": "Does {{ .System }} or {{- end }} or {% if x %} run?"},
        {"role": "assistant", "content": "No: {{ .Prompt }}, `{{`, `}}` and {# x #} are text."},
        {"role": "user", "content": '{{ range $i, $m := .Messages }}{{ $m.Content }}{{ end }}"'},
    ],
    [
        {"role": "system", "content": "Réponds en français — « guillemets » ✓"},
        {"role": "user", "content": "Qu’est-ce qu’un `DataFrame` ? 数据帧 🚀 e\u0301 שלום"},
        {"role": "assistant", "content": "Un plan paresseux. Ünïcödé \u200d👩\u200d💻"},
        {"role": "user", "content": "Merci ! 🙏"},
    ],
]


def ollama_messages(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The values Ollama gives a Messages template (`template.Execute`): every system
    message joined into .System, consecutive same-role messages merged into .Messages."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    collated: list[dict[str, str]] = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return {"System": system, "Messages": collated}


def normalized(conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    """`conversation` with every message's content as the entry points send it."""
    return [{**m, "content": normalize_message_content(m["content"])} for m in conversation]


def build_ollama_prompt(
    model_dir: Path, *, bos_added_by_runtime: bool, template_vars: dict[str, Any] | None = None
) -> OllamaPrompt:
    """Derive the Go template and stops from `model_dir`'s chat template, and prove them."""
    template = load_chat_template(model_dir)
    special = _special_tokens(model_dir)

    def render(turns: list[tuple[str, str]], gen: bool) -> str:
        messages = [{"role": role, "content": content} for role, content in turns]
        return render_hf_chat(
            template,
            messages,
            add_generation_prompt=gen,
            special_tokens=special,
            template_vars=template_vars,
        )

    pieces = _derive_pieces(render)
    bos = special.get("bos_token", "")
    stripped = ""
    if bos_added_by_runtime and bos and pieces["sys_prefix"].startswith(bos):
        # llama.cpp/Ollama prepend BOS themselves; keeping it in the text would double it.
        pieces["sys_prefix"] = pieces["sys_prefix"][len(bos) :]
        pieces["default_block"] = _strip_prefix(pieces["default_block"], bos, "default block")
        stripped = bos
    go_template = _assemble(pieces)
    for conversation in map(normalized, PROBE_CONVERSATIONS):
        expected = render_hf_chat(
            template,
            conversation,
            add_generation_prompt=True,
            special_tokens=special,
            template_vars=template_vars,
        )
        got = stripped + render_go_template(go_template, ollama_messages(conversation))
        if got != expected:
            raise TemplateError(
                f"generated Ollama template renders differently from the HF chat template:\n"
                f"HF:     {expected!r}\nOllama: {got!r}"
            )
    return OllamaPrompt(go_template, _stop_strings(model_dir, pieces), stripped)
