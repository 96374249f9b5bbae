"""Source selection: anchored globs, `**`, .gitignore (nested, negation), never-read dirs."""

from __future__ import annotations

from pathlib import Path

from pipeline.ingest.globs import GlobSet
from pipeline.ingest.sources import Repo, discover_repos, walk_repo
from pipeline.settings import DEFAULT_CODE, DEFAULT_DOCS, RepoSettings, Settings, SourcesSettings


def test_single_star_stays_in_one_directory() -> None:
    globs = GlobSet(["*.rs", "src/**/*.rs", "datafusion/*/src/**/*.rs"])
    assert globs.matches("lib.rs")
    assert not globs.matches("nested/lib.rs")
    assert globs.matches("src/lib.rs")
    assert globs.matches("src/a/b/c.rs")
    assert globs.matches("datafusion/core/src/lib.rs")
    assert globs.matches("datafusion/core/src/physical/plan.rs")
    assert not globs.matches("datafusion/core/benches/x.rs")


def test_may_contain_prunes_directories_no_glob_reaches() -> None:
    globs = GlobSet(["docs/**/*.md", "datafusion/*/src/**/*.rs"])
    assert globs.may_contain("docs")
    assert globs.may_contain("docs/source/user-guide")
    assert globs.may_contain("datafusion/core")
    assert not globs.may_contain("benchmarks")


def _repo(root: Path, **kw: list[str]) -> Repo:
    return Repo(
        "r", root, kw.get("docs", list(DEFAULT_DOCS)), kw.get("code", list(DEFAULT_CODE)), []
    )


def test_defaults_select_docs_and_root_src_examples_code(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert repo.matches("docs/source/user-guide/intro.md") == "doc"
    assert repo.matches("docs/index.rst") == "doc"
    assert repo.matches("README.md") is None
    assert repo.matches("build.rs") == "code"
    assert repo.matches("src/main.cpp") == "code"
    assert repo.matches("examples/demo/x.py") == "code"
    assert repo.matches("tests/test_x.py") is None
    assert repo.matches("src/target/gen.rs") is None  # never-read directory


def test_gitignore_rules_apply_including_nested_and_negation(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.gen.rs\nbuild/\n")
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / ".gitignore").write_text("skip_*.rs\n!skip_keep.rs\n")
    for rel in [
        "src/a.rs",
        "src/b.gen.rs",
        "src/build/c.rs",
        "src/sub/skip_me.rs",
        "src/sub/skip_keep.rs",
        "src/sub/ok.rs",
    ]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("fn x() {}\n")
    repo = _repo(tmp_path)
    found = {c.rel_path for c in walk_repo(repo)}
    assert found == {"src/a.rs", "src/sub/skip_keep.rs", "src/sub/ok.rs"}
    assert repo.matches("src/b.gen.rs") is None
    assert repo.matches("src/sub/skip_keep.rs") == "code"


def test_walk_never_enters_git_target_node_modules_venv(tmp_path: Path) -> None:
    for d in (".git", "target", "node_modules", ".venv"):
        (tmp_path / "src" / d).mkdir(parents=True)
        (tmp_path / "src" / d / "x.rs").write_text("fn x() {}\n")
    repo = _repo(tmp_path, code=["**/*.rs"])
    assert list(walk_repo(repo)) == []


def test_repo_entries_override_and_add(tmp_path: Path) -> None:
    (tmp_path / "sources" / "alpha").mkdir(parents=True)
    (tmp_path / "sources" / "beta").mkdir()
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    settings = Settings(
        sources=SourcesSettings(
            dir=tmp_path / "sources",
            repo=[
                RepoSettings("beta", tmp_path / "sources" / "beta", docs=["**/*.md"]),
                RepoSettings("gamma", extra),
            ],
        )
    )
    repos = {r.name: r for r in discover_repos(settings)}
    assert set(repos) == {"alpha", "beta", "gamma"}
    assert repos["beta"].docs == ["**/*.md"]
    assert repos["gamma"].root == extra.resolve()


def test_long_lived_repo_notices_gitignore_edits(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert repo.matches("src/a.rs") == "code"
    (tmp_path / ".gitignore").write_text("src/a.rs\n")
    assert repo.matches("src/a.rs") is None
    (tmp_path / ".gitignore").unlink()
    assert repo.matches("src/a.rs") == "code"
