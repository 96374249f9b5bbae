"""The shape of the tree (ARCHITECTURE.md): layers, no import circles, no inheritance chains."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("state", "pipeline", "daemon")
# Which packages each layer may import: data flows daemon → pipeline → state.
ALLOWED = {"state": {"state"}, "pipeline": {"pipeline", "state"}, "daemon": set(PACKAGES)}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name lands in (a module, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every project module `module` imports, at any depth of its code (TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and (target := _resolve(name)) and target != module:
                targets.add(target)
    return targets


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_circle() -> None:
    assert _cycles(GRAPH) == []


def test_data_flows_one_way_daemon_pipeline_state() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert wrong == []


def test_nothing_imports_the_cli() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if (target == "daemon.cli" or target.startswith("daemon.cli."))
        and not (module == "daemon.cli" or module.startswith("daemon.cli."))
    ]
    assert wrong == []


def _project_classes() -> list[type]:
    classes: list[type] = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names = [package] + [
            info.name for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        ]
        for name in names:
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == name:
                    classes.append(cls)
    return classes


def _is_project(cls: type) -> bool:
    return cls.__module__.split(".")[0] in PACKAGES


@pytest.mark.slow
def test_no_class_inherits_from_another_project_class() -> None:
    """Parts are composed, not inherited: only protocols and exception hierarchies chain."""
    wrong = []
    for cls in _project_classes():
        for base in cls.__mro__[1:]:
            if not _is_project(base):
                continue
            if getattr(base, "_is_protocol", False) or issubclass(base, BaseException):
                continue
            wrong.append(f"{cls.__module__}.{cls.__qualname__} inherits {base.__qualname__}")
    assert wrong == []


# One module per outside system: which product modules may name an API path in code.
API_PATHS = {
    "/api/": ("pipeline/clients/ollama/",),  # Ollama's HTTP API
    "/v1/chat/completions": ("pipeline/clients/openai_compat.py",),
    "/v1/completions": ("pipeline/clients/openai_compat.py",),
}
# Modules that SERVE a path (routes of doctune's own endpoint), not clients of it.
SERVERS = ("pipeline/ship/serve.py",)


def _code_strings(path: Path) -> list[str]:
    """String literals of a module's code (docstrings left out: they may name any API)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def test_each_model_server_api_is_called_from_its_one_client_module() -> None:
    wrong = []
    for path in MODULES.values():
        where = path.relative_to(ROOT).as_posix()
        if where in SERVERS:
            continue
        for text in _code_strings(path):
            for api_path, homes in API_PATHS.items():
                if api_path in text and not where.startswith(homes):
                    wrong.append(f"{where}: {text[:60]!r}")
    assert wrong == []
