"""The errors a user meets: one clear line naming the thing and what to do; exit 2 for bad
input (config, usage), 1 for a failure; nothing lost, nothing half-written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli import main
from daemon.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, extra: str = "") -> Path:
    """A config with one small docs repo under tmp_path/sources/demo."""
    docs = tmp_path / "sources" / "demo" / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "a.md").write_text(
        "# Title\n\nSome text about the things that matter in these docs, long enough.\n"
    )
    path = tmp_path / "doctune.toml"
    path.write_text(f'[paths]\nstate_dir = "data"\n[sources]\ndir = "sources"\n{extra}')
    return path


def _cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def _doctune(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real entry point in its own process: stdout and stderr kept apart."""
    return subprocess.run(
        [sys.executable, "-c", "from daemon.cli import main; main()", "--config", str(config),
         *args],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "DOCTUNE_LOG_LEVEL": "", "DOCTUNE_LOG_FORMAT": "", **(env or {})},
    )  # fmt: skip


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[generator]\nurl = "not a url"\n', "generator.url"),
        ('[generator]\nurl = "http://127.0.0.1:99999"\n', "generator.url"),
        ('[generator]\nurl = "ftp://host"\n', "generator.url"),
        ('[[generator.endpoints]]\nurl = "localhost:11434"\n', "generator.endpoints[0].url"),
        ('[registry]\nollama_url = "127.0.0.1"\n', "registry.ollama_url"),
        ('[generator]\nkeep_alive = "forever"\n', "generator.keep_alive"),
    ],
)
def test_a_bad_url_or_keep_alive_is_a_config_error_exit_2(
    tmp_path: Path, line: str, key: str
) -> None:
    config = _config(tmp_path, line)
    code, out = _cli(config, "run", "--once")
    assert code == 2
    assert f"  - {key}: " in out
    assert "Traceback" not in out


def test_value_errors_are_reported_together_with_key_errors(tmp_path: Path) -> None:
    path = _config(tmp_path, "[chunking]\nmin_chars = 5000\nmax_char = 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(p.startswith("chunking.max_char: unknown key") for p in info.value.problems)
    assert "chunking.min_chars: must be > 0 and <= chunking.max_chars" in info.value.problems


def test_a_wrong_type_is_reported_once_not_again_as_a_range(tmp_path: Path) -> None:
    path = _config(tmp_path, '[chunking]\nmin_chars = "big"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p for p in info.value.problems if p.startswith("chunking.min_chars")] == [
        "chunking.min_chars: expected an integer, got 'big'"
    ]


# ------------------------------------------------------------------ logging


def test_plain_commands_log_only_warnings_unless_verbose(tmp_path: Path) -> None:
    config = _config(tmp_path)
    quiet = _doctune(config, "scan")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # no JSON log lines for a plain command
    assert quiet.stdout.startswith("scanned 1 files")
    verbose = _doctune(config, "--verbose", "scan")
    assert '"event": "reconciled"' in verbose.stderr  # not a terminal: JSON lines
    assert verbose.stdout.startswith("scanned 1 files")
