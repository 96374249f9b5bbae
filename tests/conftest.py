"""Shared fixtures: anyio on asyncio, the DataFusion corpus, temporary git repos."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from ollama_fake import FakeOllama

import daemon.logsetup

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "datafusion"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep logging set up by in-process CLI runs from leaking into later tests.

    `configure_logging` caches each structlog logger on first use, and a cached logger
    keeps that pipeline for the rest of the process, out of reach of a later
    `LogCapture`. So loggers are never cached in tests (the caching itself is covered
    by the subprocess test in test_daemon_logsetup.py), and the configuration, root
    handlers and the first-call-wins flag are put back after each test.
    """
    real_configure = structlog.configure

    def configure_uncached(**settings: Any) -> None:
        real_configure(**{**settings, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", configure_uncached)
    old_config = structlog.get_config()
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    was_configured = daemon.logsetup._configured
    yield
    real_configure(**old_config)
    root.handlers[:] = old_handlers
    root.setLevel(old_level)
    daemon.logsetup._configured = was_configured


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the DataFusion corpus is missing at {CORPUS} (expected ../shared/corpus)")
    return CORPUS


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity; returns stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "doctune-tests",
        "GIT_AUTHOR_EMAIL": "tests@doctune.invalid",
        "GIT_COMMITTER_NAME": "doctune-tests",
        "GIT_COMMITTER_EMAIL": "tests@doctune.invalid",
    }
    result = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return result.stdout


@pytest.fixture
def corpus_repo(tmp_path: Path, corpus_dir: Path) -> Path:
    """A fresh git repository `sources/datafusion` holding a copy of the corpus, committed."""
    repo = tmp_path / "sources" / "datafusion"
    shutil.copytree(corpus_dir, repo)
    for p in repo.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(repo, 0o755)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "corpus")
    return repo


@pytest.fixture
def ollama_fake() -> Iterator[FakeOllama]:
    """The Ollama stand-in (tests/ollama_fake/) on 127.0.0.1:<free port>, in its own thread.

    Works from sync and async tests; tune it through its attributes (``slots``, ``latency_s``,
    ``rate_503``, ...), inspect ``calls`` / ``max_in_flight``, toggle ``set_outage()``.
    """
    fake = FakeOllama().start()
    try:
        yield fake
    finally:
        fake.stop()
