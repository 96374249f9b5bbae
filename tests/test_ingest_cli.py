"""`doctune scan / chunks / status` end to end through click."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from daemon.cli import main


def _config(tmp_path: Path, corpus_repo: Path) -> Path:
    config = tmp_path / "doctune.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp_path / "state"}"\nmodels_dir = "{tmp_path / "models"}"\n'
        f'[sources]\ndir = "{corpus_repo.parent}"\n'
    )
    return config


def _json_lines(output: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_scan_then_chunks_json_lines_carry_provenance(tmp_path: Path, corpus_repo: Path) -> None:
    config = str(_config(tmp_path, corpus_repo))
    runner = CliRunner()
    scan = runner.invoke(main, ["--config", config, "scan"])
    assert scan.exit_code == 0, scan.output
    assert "68 new" in scan.output or "new" in scan.output
    path = "docs/source/user-guide/faq.md"
    out = runner.invoke(
        main, ["--config", config, "chunks", "--repo", "datafusion", "--path", path, "--json"]
    )
    assert out.exit_code == 0, out.output
    rows = _json_lines(out.output)
    assert rows
    assert set(rows[0]) == {"repo", "path", "strategy", "hash", "start_line", "end_line", "text"}
    assert {r["path"] for r in rows} == {path}
    assert {r["strategy"] for r in rows} == {"heading", "paragraph", "fixed"}
    source = (corpus_repo / path).read_text().split("\n")
    for row in rows:
        assert 1 <= row["start_line"] <= row["end_line"] <= len(source)
    only_fixed = runner.invoke(
        main, ["--config", config, "chunks", "--strategy", "fixed", "--path", path, "--json"]
    )
    assert {r["strategy"] for r in _json_lines(only_fixed.output)} == {"fixed"}


def test_scan_json_summary_and_second_scan_parses_nothing(
    tmp_path: Path, corpus_repo: Path
) -> None:
    config = str(_config(tmp_path, corpus_repo))
    runner = CliRunner()
    runner.invoke(main, ["--config", config, "scan"])
    again = runner.invoke(main, ["--config", config, "scan", "--json"])
    assert again.exit_code == 0, again.output
    summary = _json_lines(again.output)[-1]
    assert summary["parsed_files"] == 0
    assert summary["unchanged"] == summary["files_seen"] > 0


def test_unknown_repo_is_a_usage_error(tmp_path: Path, corpus_repo: Path) -> None:
    config = str(_config(tmp_path, corpus_repo))
    result = CliRunner().invoke(main, ["--config", config, "scan", "--repo", "nope"])
    assert result.exit_code == 2
    assert "unknown repository" in result.output


def test_status_reports_files_and_chunks_by_strategy(tmp_path: Path, corpus_repo: Path) -> None:
    config = str(_config(tmp_path, corpus_repo))
    runner = CliRunner()
    runner.invoke(main, ["--config", config, "scan"])
    result = runner.invoke(main, ["--config", config, "status", "--json"])
    snap = _json_lines(result.output)[-1]
    assert snap["files"]["by_status"]["live"] > 60
    assert set(snap["chunks"]["by_strategy"]) == {"heading", "paragraph", "fixed"}
    assert snap["chunks"]["live"] > 0
    human = runner.invoke(main, ["--config", config, "status"])
    assert human.exit_code == 0
    assert "chunks:" in human.output
