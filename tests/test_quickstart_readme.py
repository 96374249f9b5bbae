"""README's first command, verbatim, in a temporary copy of the checkout: the loop runs once,
registers a model that answers, and a second run makes no LLM calls and trains nothing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_first_command() -> list[str]:
    """The first `uv run doctune …` line of README's Quickstart block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Quickstart") :]
    line = next(ln for ln in block.splitlines() if ln.startswith("uv run doctune"))
    return shlex.split(re.sub(r"\s+#.*$", "", line))


def _copy_checkout(dst: Path, corpus_dir: Path) -> Path:
    """Tracked files of the checkout, and the corpus where the README expects it."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    repo = dst / "repo"
    for name in files:
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (dst / "shared" / "corpus").mkdir(parents=True)
    (dst / "shared" / "corpus" / "datafusion").symlink_to(corpus_dir)
    return repo


@pytest.mark.slow
def test_readme_first_command_runs_the_loop_and_the_model_answers(
    tmp_path: Path, corpus_dir: Path
) -> None:
    command = readme_first_command()
    assert command[:3] == ["uv", "run", "doctune"], command
    repo = _copy_checkout(tmp_path, corpus_dir)
    env = {
        **os.environ,
        "UV_NO_SYNC": "1",  # use this checkout's synced environment, not a fresh install
        "UV_PROJECT_ENVIRONMENT": str(ROOT / ".venv"),
        # the README's documented cut-down: 2 of the 4 pages, 12 training steps
        "DOCTUNE_QUICKSTART_MAX_PAGES": "2",
        "DOCTUNE_QUICKSTART_MAX_STEPS": "12",
        "DOCTUNE_LOG_LEVEL": "warning",
    }
    first = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Q: What is Apache DataFusion?" in first.stdout
    assert "tuned (doctune:" in first.stdout
    gguf = re.search(r"^model: (\S+model\.gguf)$", first.stdout, re.MULTILINE)
    assert gguf is not None, first.stdout[-2000:]
    assert Path(gguf.group(1)).is_relative_to(repo / "models" / "quickstart" / "registry")

    asked = subprocess.run(
        [*command[:3], "--config", "examples/quickstart.toml", "ask", "What is DataFusion?"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert asked.stdout.strip()

    again = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 LLM calls" in again.stderr
    assert "skipped: run" in again.stderr  # no training


def test_cut_down_keeps_the_first_pages_and_caps_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.cli.quickstart import _budgeted
    from daemon.config import load_config

    settings, _ = load_config(ROOT / "examples" / "quickstart.toml")
    monkeypatch.setenv("DOCTUNE_QUICKSTART_MAX_PAGES", "2")
    monkeypatch.setenv("DOCTUNE_QUICKSTART_MAX_STEPS", "12")
    cut = _budgeted(settings)
    assert cut.sources.repo[0].docs == settings.sources.repo[0].docs[:2]
    assert len(settings.sources.repo[0].docs) == 4
    assert cut.training.max_steps == 12


@pytest.mark.parametrize("value", ["two", "0"])
def test_cut_down_rejects_a_bad_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from click.testing import CliRunner

    from daemon.cli import main

    monkeypatch.setenv("DOCTUNE_QUICKSTART_MAX_PAGES", value)
    result = CliRunner().invoke(
        main, ["--config", str(ROOT / "examples" / "quickstart.toml"), "quickstart"]
    )
    assert result.exit_code == 2
    assert "$DOCTUNE_QUICKSTART_MAX_PAGES" in result.output
