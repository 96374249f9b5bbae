"""The Modelfile kept beside each registered GGUF: what `ollama create NAME -f Modelfile` needs.

It carries exactly the template and stop strings that registration sends to the create API
(and that the embedded registry renders prompts with), so a person can read what the model
sees and reproduce the registration by hand. `parse_modelfile` reads one back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MODELFILE_NAME",
    "ModelfileError",
    "VersionPrompt",
    "parse_modelfile",
    "render_modelfile",
    "write_modelfile",
]

MODELFILE_NAME = "Modelfile"


class ModelfileError(ValueError):
    """The template or stops cannot be written as (or read from) a Modelfile."""


@dataclass(frozen=True)
class VersionPrompt:
    """How prompts reach a version: its Ollama Go template and stop strings."""

    template: str
    stop: list[str]
    # BOS text the runtime prepends (stripped from the template); llama-cpp-python's
    # completions endpoint does not add it, so the embedded engine puts it back.
    bos: str = ""


def _quote_stop(stop: str) -> str:
    if '"' in stop or "\n" in stop:
        raise ModelfileError(f"stop string {stop!r} cannot be written as a Modelfile PARAMETER")
    return f'"{stop}"'


def render_modelfile(from_path: str, prompt: VersionPrompt, *, tag: str) -> str:
    """The Modelfile text: FROM, TEMPLATE (triple-quoted, verbatim), one PARAMETER per stop."""
    if '"""' in prompt.template or prompt.template.endswith('"'):
        raise ModelfileError(
            "template contains '\"\"\"' or ends with '\"'; no Modelfile quoting fits"
        )
    lines = [
        f"# doctune {tag}: reproduce this registration with",
        f"#   ollama create {tag} -f Modelfile",
        f"FROM {from_path}",
        f'TEMPLATE """{prompt.template}"""',
        *(f"PARAMETER stop {_quote_stop(s)}" for s in prompt.stop),
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(directory: Path, from_path: str, prompt: VersionPrompt, *, tag: str) -> Path:
    """Write `directory/Modelfile` atomically (tmp file + rename); returns its path."""
    text = render_modelfile(from_path, prompt, tag=tag)
    path = directory / MODELFILE_NAME
    tmp = directory / f".{MODELFILE_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def parse_modelfile(text: str) -> tuple[str, VersionPrompt]:
    """(FROM, prompt) from a Modelfile written by `render_modelfile` (or shaped like one)."""
    from_path, template, stops = "", None, []
    rest = text
    while rest:
        line, _, after = rest.partition("\n")
        word, _, arg = line.strip().partition(" ")
        if word.upper() == "FROM":
            from_path = arg.strip()
        elif word.upper() == "TEMPLATE":
            body = line[line.index("TEMPLATE") + len("TEMPLATE") :].lstrip() + "\n" + after
            if body.startswith('"""'):
                end = body.index('"""', 3)
                template, after = body[3:end], body[end + 3 :].partition("\n")[2]
            else:
                template = json.loads(arg.strip()) if arg.strip().startswith('"') else arg.strip()
        elif word.upper() == "PARAMETER":
            name, _, value = arg.strip().partition(" ")
            if name == "stop":
                value = value.strip()
                stops.append(value[1:-1] if value.startswith('"') else value)
        rest = after
    if not from_path or template is None:
        raise ModelfileError("Modelfile lacks FROM or TEMPLATE")
    return from_path, VersionPrompt(template, stops)
