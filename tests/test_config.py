"""Config: typed, validated, unknown keys named, every error at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doctune.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCTUNE_CONFIG", raising=False)
    settings, used = load_config(None)
    assert used is None
    assert settings.paths.state_dir == tmp_path / "data"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[paths]\nstate_dir = "st"\n[sources]\ndir = "src"\n')
    settings, _ = load_config(path)
    assert settings.paths.state_dir == tmp_path / "st"
    assert settings.sources.dir == tmp_path / "src"


def test_all_errors_are_reported_at_once_naming_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[paths]\nstate_dirr = "x"\n[chunking]\nmax_chars = "big"\n'
        '[generator]\nbackend = "gpt"\n[nosuch]\na = 1\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    for key in ("paths.state_dirr", "chunking.max_chars", "generator.backend", "nosuch"):
        assert key in text


def test_repo_entries_are_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[sources.repo]]\nname = "df"\npath = "repos/df"\ndocs = ["docs/**/*.md"]\n',
    )
    settings, _ = load_config(path)
    (repo,) = settings.sources.repo
    assert repo.name == "df"
    assert repo.path == tmp_path / "repos" / "df"
    assert repo.docs == ["docs/**/*.md"]


def test_env_var_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[chunking]\nmax_chars = 900\n")
    monkeypatch.setenv("DOCTUNE_CONFIG", str(path))
    settings, used = load_config(None)
    assert used == path
    assert settings.chunking.max_chars == 900
