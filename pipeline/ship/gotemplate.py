"""A Go `text/template` interpreter for the subset Ollama chat templates use.

Enough to render the templates `pipeline.ship.template` generates (and Ollama's own
Messages-style ones) with Go's semantics: `{{- ... -}}` trim markers, `if / else if / else
/ end`, `range $i, $m := .Messages`, variables, `$.Field`, and the builtins `eq`, `ne`,
`not`, `and`, `or`, `len`, `slice`. Emptiness follows Go (empty string, 0, empty list and
nil are false). Used to prove a generated template renders exactly what the HF chat
template renders, before it is sent to Ollama.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GoTemplateError", "render_go_template"]

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|:=|[^\s()]+')


class GoTemplateError(ValueError):
    """The template uses syntax outside the supported subset, or is malformed."""


@dataclass
class _Node:
    kind: str  # text | action | if | range | assign
    text: str = ""
    expr: list[str] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # range variables / assigned variable


def _lex(template: str) -> list[tuple[str, str]]:
    """('text', s) and ('action', inner) items with trim markers applied to the text."""
    items: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(("text", text))
        inner = match.group(2).strip()
        if not inner.startswith("/*"):
            items.append(("action", inner))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = template[pos:]
    items.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))
    return items


def _parse(
    items: list[tuple[str, str]], pos: int, stop: tuple[str, ...]
) -> tuple[list[_Node], int]:
    nodes: list[_Node] = []
    while pos < len(items):
        kind, value = items[pos]
        if kind == "text":
            if value:
                nodes.append(_Node("text", text=value))
            pos += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return nodes, pos
        if word == "if":
            node, pos = _parse_if(items, pos, value[2:].strip())
            nodes.append(node)
        elif word == "range":
            node = _Node("range")
            spec = value[5:].strip()
            if ":=" in spec:
                lhs, rhs = spec.split(":=", 1)
                node.names = [n.strip() for n in lhs.split(",")]
                spec = rhs.strip()
            node.expr = _TOKEN.findall(spec)
            node.body, pos = _parse(items, pos + 1, ("end",))
            pos += 1
            nodes.append(node)
        elif value.startswith("$") and ":=" in value:
            name, expr = value.split(":=", 1)
            nodes.append(_Node("assign", names=[name.strip()], expr=_TOKEN.findall(expr)))
            pos += 1
        elif word in ("end", "else"):
            raise GoTemplateError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(_Node("action", expr=_TOKEN.findall(value)))
            pos += 1
    if stop:
        raise GoTemplateError(f"missing {{{{ {stop[0]} }}}}")
    return nodes, pos


def _parse_if(items: list[tuple[str, str]], pos: int, cond: str) -> tuple[_Node, int]:
    node = _Node("if", expr=_TOKEN.findall(cond))
    node.body, pos = _parse(items, pos + 1, ("else", "end"))
    _, value = items[pos]
    if value.startswith("else if"):
        child, pos = _parse_if(items, pos, value[len("else if") :].strip())
        node.orelse = [child]
        return node, pos
    if value == "else":
        node.orelse, pos = _parse(items, pos + 1, ("end",))
    return node, pos + 1


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, Sequence) and not value)


class _Scope:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.vars: dict[str, Any] = {"$": root}
        self.dot: Any = root

    def field(self, base: Any, path: list[str]) -> Any:
        for name in path:
            if isinstance(base, dict):
                base = base.get(name, base.get(name.lower()))
            else:
                base = getattr(base, name, None)
        return base


def _eval(tokens: list[str], scope: _Scope) -> Any:
    value, rest = _eval_pipeline(tokens, scope)
    if rest:
        raise GoTemplateError(f"unexpected tokens {rest}")
    return value


def _eval_pipeline(tokens: list[str], scope: _Scope) -> tuple[Any, list[str]]:
    head, rest = tokens[0], tokens[1:]
    funcs = {"eq", "ne", "not", "and", "or", "len", "slice"}
    if head in funcs:
        args: list[Any] = []
        while rest and rest[0] != ")":
            arg, rest = _eval_operand(rest, scope)
            args.append(arg)
        return _call(head, args), rest
    return _eval_operand(tokens, scope)


def _eval_operand(tokens: list[str], scope: _Scope) -> tuple[Any, list[str]]:
    head, rest = tokens[0], tokens[1:]
    if head == "(":
        value, rest = _eval_pipeline(rest, scope)
        if not rest or rest[0] != ")":
            raise GoTemplateError("unbalanced parentheses")
        return value, rest[1:]
    if head.startswith('"'):
        return bytes(head[1:-1], "utf-8").decode("unicode_escape"), rest
    if head.isdigit():
        return int(head), rest
    if head in ("true", "false"):
        return head == "true", rest
    if head == ".":
        return scope.dot, rest
    if head.startswith("$"):
        name, _, path = head.partition(".")
        if name not in scope.vars:
            raise GoTemplateError(f"undefined variable {name}")
        return scope.field(scope.vars[name], path.split(".") if path else []), rest
    if head.startswith("."):
        return scope.field(scope.dot, head[1:].split(".")), rest
    raise GoTemplateError(f"unsupported token {head!r}")


def _call(name: str, args: list[Any]) -> Any:
    if name == "eq":
        return any(args[0] == other for other in args[1:])
    if name == "ne":
        return args[0] != args[1]
    if name == "not":
        return not _truthy(args[0])
    if name == "and":
        result = args[0]
        for arg in args:
            result = arg
            if not _truthy(arg):
                return arg
        return result
    if name == "or":
        for arg in args:
            if _truthy(arg):
                return arg
        return args[-1]
    if name == "len":
        return len(args[0])
    if name == "slice":
        # Go: slice x 1 2 is x[1:2]; slice x 1 is x[1:]
        start = args[1] if len(args) > 1 else None
        stop = args[2] if len(args) > 2 else None
        return args[0][start:stop]
    raise GoTemplateError(f"unsupported function {name}")


def _exec(nodes: list[_Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            value = _eval(node.expr, scope)
            out.append("" if value is None else str(value))
        elif node.kind == "assign":
            scope.vars[node.names[0]] = _eval(node.expr, scope)
        elif node.kind == "if":
            _exec(node.body if _truthy(_eval(node.expr, scope)) else node.orelse, scope, out)
        elif node.kind == "range":
            items = _eval(node.expr, scope) or []
            saved_dot = scope.dot
            for index, item in enumerate(items):
                if len(node.names) == 2:
                    scope.vars[node.names[0]], scope.vars[node.names[1]] = index, item
                elif node.names:
                    scope.vars[node.names[0]] = item
                scope.dot = item
                _exec(node.body, scope, out)
            scope.dot = saved_dot


def render_go_template(template: str, values: dict[str, Any]) -> str:
    """Render `template` against `values` (e.g. {"System": ..., "Messages": [...]})."""
    nodes, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _exec(nodes, _Scope(values), out)
    return "".join(out)
