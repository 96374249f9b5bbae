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
from ollama_fake import FakeOllama
from test_generate_cli import make_repo, write_config

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


# ------------------------------------------------------------------ database


def test_a_corrupt_database_is_named_with_what_to_do(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db_path = tmp_path / "data" / "doctune.sqlite3"
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not an SQLite file, whatever its name says" * 40)
    before = db_path.read_bytes()
    code, out = _cli(config, "scan")
    assert code == 1
    assert out.strip().splitlines() == [
        f"Error: the database {db_path} is unusable (file is not a database); move it aside"
        " to start a new one, or set paths.state_dir to another directory"
    ]
    assert db_path.read_bytes() == before  # nothing written over it


def test_another_program_s_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db_path = tmp_path / "data" / "doctune.sqlite3"
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE files (name TEXT)")
        conn.execute("INSERT INTO files VALUES ('precious')")
    code, out = _cli(config, "status")
    assert code == 1
    assert f"{db_path} is not a doctune database (it has tables files)" in out
    with sqlite3.connect(db_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["files"]  # no doctune table was added to it


# ------------------------------------------------------------------ usage


def test_a_missing_sources_dir_is_bad_input_not_an_empty_scan(tmp_path: Path) -> None:
    config = tmp_path / "doctune.toml"
    config.write_text('[paths]\nstate_dir = "data"\n[sources]\ndir = "nosuch"\n')
    for args in (("scan",), ("run", "--once")):
        code, out = _cli(config, *args)
        assert code == 2, args
        assert f"sources.dir {tmp_path / 'nosuch'} does not exist" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("chunks", "--strategy", "bogus"), "unknown strategy 'bogus'; choose one of heading,"),
        (("chunks", "--repo", "nope"), "unknown repository: nope"),
        (("scan", "--repo", "nope"), "unknown repository: nope"),
    ],
)
def test_an_unknown_strategy_or_repository_is_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    config = _config(tmp_path)
    assert _cli(config, "scan")[0] == 0
    code, out = _cli(config, *args)
    assert code == 2
    assert out.startswith(f"Error: {message}")
    assert len(out.strip().splitlines()) == 1


def test_the_strategy_list_is_the_chunker_s() -> None:
    from daemon.cli.ingest import STRATEGIES
    from pipeline.ingest.parse import CODE_STRATEGIES, DOC_STRATEGIES

    assert STRATEGIES == DOC_STRATEGIES + CODE_STRATEGIES


# ------------------------------------------------------------------ generator


def test_a_404_from_a_server_that_is_not_ollama_does_not_say_pull(tmp_path: Path) -> None:
    """Something else listens where Ollama was expected: every path is 404 "page not found"."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotOllama(BaseHTTPRequestHandler):
        def _not_found(self) -> None:
            body = b"404 page not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _not_found

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = _config(tmp_path, f'[generator]\nbackend = "ollama"\nurl = "{url}"\n')
        code, out = _cli(config, "run", "--once")
    finally:
        server.shutdown()
    assert code == 1
    assert "does not look like the configured generator API: check generator.url" in out
    assert "pull" not in out


# ------------------------------------------------------------------ exports


@pytest.fixture
def exported_repo(tmp_path: Path, ollama_fake: FakeOllama) -> Path:
    """A config whose database holds pairs (one real `run --once` against the stand-in)."""
    make_repo(tmp_path)
    config = write_config(tmp_path, ollama_fake.url)
    old = os.umask(0o027)
    try:
        code, out = _cli(config, "run", "--once")
    finally:
        os.umask(old)
    assert code == 0, out
    return config


def test_exports_follow_the_umask_like_the_database(tmp_path: Path, exported_repo: Path) -> None:
    old = os.umask(0o027)
    try:
        for fmt, name in (("jsonl", "p.jsonl"), ("parquet", "p.parquet"), ("hf", "p_hf")):
            code, out = _cli(
                exported_repo, "export", "--format", fmt, "--out", str(tmp_path / name)
            )
            assert code == 0, out
    finally:
        os.umask(old)
    data = tmp_path / "data"
    files = [tmp_path / "p.jsonl", tmp_path / "p.parquet", data / "datafusion_qa.jsonl"]
    files += [p for p in (tmp_path / "p_hf").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes
    assert oct((data / "doctune.sqlite3").stat().st_mode & 0o777) == oct(0o640)


def test_hf_export_onto_an_existing_file_is_refused_and_leaves_nothing(
    tmp_path: Path, exported_repo: Path
) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, out = _cli(exported_repo, "export", "--format", "hf", "--out", str(target))
    assert code == 2
    assert out.strip() == (
        f"Error: --out {target} is an existing file; the hf format writes a directory:"
        " choose another path"
    )
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_hf_export_never_replaces_a_directory_that_is_not_an_export(
    tmp_path: Path, exported_repo: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    code, out = _cli(exported_repo, "export", "--format", "hf", "--out", str(home))
    assert code == 2
    assert "is a directory that is not an earlier hf export" in out
    assert (home / "thesis.tex").read_text() == "years of work"
    # an earlier export is replaced
    code, out = _cli(exported_repo, "export", "--format", "hf", "--out", str(tmp_path / "ds"))
    assert code == 0, out
    code, out = _cli(exported_repo, "export", "--format", "hf", "--out", str(tmp_path / "ds"))
    assert code == 0, out


# ------------------------------------------------------------------ human output


def test_human_status_prints_no_raw_json_or_null(tmp_path: Path, exported_repo: Path) -> None:
    code, out = _cli(exported_repo, "status")
    assert code == 0, out
    assert "null" not in out
    assert "{" not in out
    assert "served model: none registered yet (`doctune register RUN`)" in out
    assert "training: runs none; " in out


def test_names_with_control_characters_are_escaped_when_printed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    docs = tmp_path / "sources" / "demo" / "docs"
    (docs / "evil\nname\x1b[31m.md").write_text(
        "# Heading\n\nEnough words here to make one chunk of text for the listing.\n"
    )
    assert _cli(config, "scan")[0] == 0
    code, out = _cli(config, "chunks")
    assert code == 0, out
    assert "demo/docs/evil\\nname\\x1b[31m.md:" in out
    assert "\x1b" not in out


def test_printable_escapes_what_could_break_a_line_or_drive_a_terminal() -> None:
    from daemon.cli.output import printable

    assert printable("a\nb\tc\x00\x7f\u202e\u2028é💥") == "a\\nb\\tc\\x00\\x7f\\u202e\\u2028é💥"


def test_printed_and_configured_paths_are_normalised(tmp_path: Path, exported_repo: Path) -> None:
    settings, _ = load_config(exported_repo)
    assert ".." not in str(settings.paths.state_dir)
    out_path = tmp_path / "x" / ".." / "out.jsonl"
    code, out = _cli(exported_repo, "export", "--out", str(out_path))
    assert code == 0, out
    assert out.strip().endswith(f"pairs to {tmp_path / 'out.jsonl'}")
    nested = tmp_path / "examples"
    nested.mkdir()
    config = nested / "doctune.toml"
    config.write_text('[paths]\nstate_dir = "../data"\n[sources]\ndir = "../sources"\n')
    settings, _ = load_config(config)
    assert settings.paths.state_dir == tmp_path / "data"
    assert settings.sources.dir == tmp_path / "sources"
