"""reconcile(): scans, rescans, edits, deletes, hints, commits mode, pair retirement."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from pipeline.ingest.parse import ChunkConfig, FileJob, FileOutcome, process_file
from pipeline.ingest.reconcile import reconcile
from pipeline.settings import PathsSettings, Settings, SourcesSettings
from state.db import Database, now, open_db
from tests.conftest import git

pytestmark = pytest.mark.anyio

DOC = "docs/source/user-guide/introduction.md"


def make_settings(tmp_path: Path, **sources: object) -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "state", models_dir=tmp_path / "models"),
        sources=SourcesSettings(dir=tmp_path / "sources", **sources),  # type: ignore[arg-type]
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "state" / "doctune.sqlite3")
    yield database
    await database.close()


async def _live_chunk_ids(db: Database, path: str) -> set[str]:
    rows = await db.fetchall(
        "SELECT m.chunk_id FROM memberships m JOIN files f ON f.id = m.file_id"
        " WHERE f.path = ? AND f.status = 'live'",
        (path,),
    )
    return {r[0] for r in rows}


def _count_docs(root: Path) -> int:
    return len(list(root.rglob("*.md"))) + len(list(root.rglob("*.rst")))


async def test_first_scan_ingests_every_corpus_doc(
    db: Database, corpus_repo: Path, tmp_path: Path, corpus_dir: Path
) -> None:
    summary = await reconcile(db, make_settings(tmp_path))
    n_docs = _count_docs(corpus_dir)
    assert summary.new == n_docs == summary.parsed_files
    assert summary.chunks_added > 0
    assert summary.commits["datafusion"] == git(corpus_repo, "rev-parse", "HEAD").strip()
    strategies = {r[0] for r in await db.fetchall("SELECT DISTINCT strategy FROM memberships")}
    assert strategies == {"heading", "paragraph", "fixed"}
    licensed = await db.scalar(
        "SELECT count(*) FROM chunks WHERE text LIKE '%Licensed to the Apache%'"
        " OR text LIKE '%WITHOUT WARRANTIES OR CONDITIONS OF ANY%'"
    )
    assert licensed == 0


async def test_rescan_with_nothing_changed_parses_nothing(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    first = await reconcile(db, settings)
    again = await reconcile(db, settings)
    assert again.parsed_files == 0
    assert again.unchanged == first.files_seen
    assert again.chunks_added == again.chunks_retired == 0


async def test_touched_file_with_same_content_is_hashed_not_parsed(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    (corpus_repo / DOC).touch()
    (corpus_repo / DOC).write_bytes((corpus_repo / DOC).read_bytes())
    again = await reconcile(db, settings)
    assert again.parsed_files == 0
    assert again.unchanged == again.files_seen


async def test_edit_replaces_membership_and_retires_orphaned_pairs(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    before = await _live_chunk_ids(db, DOC)
    pair_chunk = sorted(before)[0]
    await _insert_pair(db, pair_chunk)
    text = (corpus_repo / DOC).read_text()
    removed_text = await db.scalar("SELECT text FROM chunks WHERE id = ?", (pair_chunk,))
    (corpus_repo / DOC).write_text(text.replace("DataFusion", "DF"))
    summary = await reconcile(db, settings)
    assert summary.changed == 1
    assert summary.parsed_files == 1
    after = await _live_chunk_ids(db, DOC)
    assert after != before
    if pair_chunk not in after and "DataFusion" in removed_text:
        assert await db.scalar("SELECT retired_at FROM pairs") is not None
    # Restoring the text revives the pair (its chunk is live again).
    (corpus_repo / DOC).write_text(text)
    await reconcile(db, settings)
    assert await _live_chunk_ids(db, DOC) == before
    assert await db.scalar("SELECT retired_at FROM pairs") is None


async def _insert_pair(db: Database, chunk_id: str) -> None:
    async with db.write() as conn:
        cur = await conn.execute(
            "INSERT INTO jobs (chunk_id, prompt_version, model, created_at, updated_at)"
            " VALUES (?, 'v1', 'm', ?, ?)",
            (chunk_id, now(), now()),
        )
        await conn.execute(
            "INSERT INTO pairs (job_id, idx, chunk_id, repo, path, strategy, chunk_preview,"
            " question, answer, model, prompt_version, created_at)"
            " VALUES (?, 0, ?, 'datafusion', ?, 'fixed', 'p', 'q?', 'a.', 'm', 'v1', ?)",
            (cur.lastrowid, chunk_id, DOC, now()),
        )


async def test_deleted_file_is_marked_and_its_chunks_stop_being_live(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    chunks = await _live_chunk_ids(db, DOC)
    await _insert_pair(db, sorted(chunks)[0])
    (corpus_repo / DOC).unlink()
    summary = await reconcile(db, settings)
    assert summary.deleted == 1
    assert await db.scalar("SELECT status FROM files WHERE path = ?", (DOC,)) == "deleted"
    live = {r[0] for r in await db.fetchall("SELECT chunk_id FROM live_chunks")}
    assert not (chunks - live) <= set() or chunks & live != chunks
    assert (
        await db.scalar(
            "SELECT count(*) FROM memberships m JOIN files f ON f.id = m.file_id WHERE f.path = ?",
            (DOC,),
        )
        == 0
    )
    retired = await db.scalar("SELECT retired_at FROM pairs")
    pair_chunk = await db.scalar("SELECT chunk_id FROM pairs")
    assert (retired is None) == (pair_chunk in live)


async def test_path_hints_only_touch_those_paths(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    other = "docs/source/user-guide/faq.md"
    (corpus_repo / DOC).write_text((corpus_repo / DOC).read_text() + "\nA new closing line.\n")
    (corpus_repo / other).write_text((corpus_repo / other).read_text() + "\nUnhinted edit.\n")
    gone = "docs/source/user-guide/metrics.md"
    (corpus_repo / gone).unlink()
    summary = await reconcile(db, settings, paths={"datafusion": [DOC, gone, "README.txt"]})
    assert summary.files_seen == 1
    assert summary.changed == 1
    assert summary.deleted == 1
    assert await db.scalar("SELECT status FROM files WHERE path = ?", (gone,)) == "deleted"
    # The unhinted edit is picked up by the next full pass.
    full = await reconcile(db, settings)
    assert full.changed == 1


async def test_commits_mode_ignores_uncommitted_edits_and_diffs_new_commits(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    first = await reconcile(db, settings, mode="commits")
    head = git(corpus_repo, "rev-parse", "HEAD").strip()
    assert first.commits["datafusion"] == head
    assert await db.scalar("SELECT count(DISTINCT git_commit) FROM files") == 1

    (corpus_repo / DOC).write_text("# Replaced\n\nUncommitted text about widgets.\n")
    idle = await reconcile(db, settings, mode="commits", paths={"datafusion": [DOC]})
    assert idle.parsed_files == 0
    assert await db.scalar("SELECT count(*) FROM chunks WHERE text LIKE '%widgets%'") == 0

    git(corpus_repo, "add", "-A")
    git(corpus_repo, "commit", "-q", "-m", "edit")
    git(corpus_repo, "rm", "-q", "docs/source/user-guide/faq.md")
    git(corpus_repo, "commit", "-q", "-m", "remove faq")
    new_head = git(corpus_repo, "rev-parse", "HEAD").strip()
    summary = await reconcile(db, settings, mode="commits")
    assert summary.parsed_files == 1  # only the diff, not the whole tree
    assert summary.deleted == 1
    assert summary.commits["datafusion"] == new_head
    assert await db.scalar("SELECT git_commit FROM files WHERE path = ?", (DOC,)) == new_head
    assert await db.scalar("SELECT count(*) FROM chunks WHERE text LIKE '%widgets%'") > 0
    assert await db.scalar("SELECT ingested_commit FROM repos") == new_head


async def test_globs_select_code_under_nested_crates(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "sources" / "proj"
    (repo / "datafusion" / "core" / "src").mkdir(parents=True)
    (repo / "datafusion" / "core" / "src" / "lib.rs").write_text(
        "pub fn answer() -> u32 {\n    42\n}\n"
    )
    (repo / "datafusion" / "core" / "README.md").write_text("# not selected\n")
    (repo / "target").mkdir()
    (repo / "target" / "gen.rs").write_text("fn never() {}\n")
    settings = make_settings(tmp_path, code=["datafusion/*/src/**/*.rs", "*.rs"])
    summary = await reconcile(db, settings)
    paths = {r[0] for r in await db.fetchall("SELECT path FROM files")}
    assert paths == {"datafusion/core/src/lib.rs"}
    assert summary.new == 1
    strategies = {r[0] for r in await db.fetchall("SELECT DISTINCT strategy FROM memberships")}
    assert strategies == {"code_fixed", "code_ast"}


async def test_unknown_repo_is_an_error(db: Database, corpus_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown repository"):
        await reconcile(db, make_settings(tmp_path), repos=["nope"])


async def test_same_text_in_two_files_is_one_chunk(db: Database, tmp_path: Path) -> None:
    repo = tmp_path / "sources" / "twins"
    (repo / "docs").mkdir(parents=True)
    body = "# Title\n\n" + "Shared paragraph text that is long enough to stand alone. " * 6
    (repo / "docs" / "a.md").write_text(body)
    (repo / "docs" / "b.md").write_text(body)
    await reconcile(db, make_settings(tmp_path))
    per_file = await db.fetchall(
        "SELECT file_id, count(*) FROM memberships GROUP BY file_id ORDER BY file_id"
    )
    assert len(per_file) == 2
    assert per_file[0][1] == per_file[1][1] == 3  # heading, paragraph, fixed: same text
    assert await db.scalar("SELECT count(*) FROM chunks") == 1
    shutil.rmtree(repo)
    summary = await reconcile(db, make_settings(tmp_path))
    assert summary.deleted == 2  # the repository left the sources dir: its files go
    reasons = {r[0] for r in await db.fetchall("SELECT reason FROM files")}
    assert reasons == {"repo_removed"}
    assert await db.scalar("SELECT count(*) FROM live_chunks") == 0


async def test_hinted_directory_is_walked_and_removed_directory_covers_its_files(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    sql_dir = corpus_repo / "docs" / "source" / "user-guide" / "sql"
    n_sql = len(_list_files(sql_dir))
    shutil.rmtree(sql_dir)
    gone = await reconcile(db, settings, paths={"datafusion": ["docs/source/user-guide/sql"]})
    assert gone.deleted == n_sql
    new_dir = corpus_repo / "docs" / "source" / "moved"
    new_dir.mkdir()
    (new_dir / "a.md").write_text("# Moved in\n\nA paragraph that arrived with its directory.\n")
    came = await reconcile(db, settings, paths={"datafusion": ["docs/source/moved"]})
    assert came.new == 1


async def test_gitignore_hint_triggers_a_full_pass(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await reconcile(db, settings)
    (corpus_repo / ".gitignore").write_text("docs/source/contributor-guide/\n")
    summary = await reconcile(db, settings, paths={"datafusion": [".gitignore"]})
    n_contrib = len(_list_files(corpus_repo / "docs" / "source" / "contributor-guide"))
    assert summary.deleted == n_contrib
    status = await db.scalar(
        "SELECT DISTINCT status FROM files WHERE path LIKE 'docs/source/contributor-guide/%'"
    )
    assert status == "deleted"


def _list_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".md", ".rst")]


async def test_changed_chunking_settings_rechunk_every_file_once(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    first = await reconcile(db, settings)
    smaller = dataclasses.replace(
        settings, chunking=dataclasses.replace(settings.chunking, max_chars=900)
    )
    again = await reconcile(db, smaller)
    assert again.parsed_files == first.parsed_files
    longest = await db.scalar(
        "SELECT max(c.n_chars) FROM memberships m JOIN chunks c ON c.id = m.chunk_id"
        " JOIN files f ON f.id = m.file_id WHERE f.status = 'live'"
    )
    assert longest <= 900
    settled = await reconcile(db, smaller)
    assert settled.parsed_files == 0


async def test_a_chunker_version_bump_with_the_same_output_keeps_chunks_and_pairs(
    db: Database, corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What upgrading to a new CHUNKER_VERSION costs when valid input chunks as before (as
    2026-12-02.1 does): one re-parse of every file, no new chunk, no pair retired."""
    from pipeline.ingest import reconcile as reconcile_module

    settings = make_settings(tmp_path)
    first = await reconcile(db, settings)
    chunks = await _live_chunk_ids(db, DOC)
    await _insert_pair(db, sorted(chunks)[0])
    monkeypatch.setattr(reconcile_module, "CHUNKER_VERSION", "a later version")
    upgraded = await reconcile(db, settings)
    assert upgraded.parsed_files == first.parsed_files
    assert (upgraded.chunks_added, upgraded.chunks_retired, upgraded.pairs_retired) == (0, 0, 0)
    assert await _live_chunk_ids(db, DOC) == chunks
    assert await db.scalar("SELECT retired_at FROM pairs") is None


async def test_process_pool_and_thread_produce_identical_chunks(
    corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.ingest import parse_pool

    async def memberships(db_path: Path) -> list[tuple]:  # type: ignore[type-arg]
        database = await open_db(db_path)
        try:
            await reconcile(database, make_settings(tmp_path))
            rows = await database.fetchall(
                "SELECT f.path, m.strategy, m.ordinal, m.chunk_id, m.start_line, m.end_line"
                " FROM memberships m JOIN files f ON f.id = m.file_id ORDER BY 1, 2, 3"
            )
            return [tuple(r) for r in rows]
        finally:
            await database.close()

    in_thread = await memberships(tmp_path / "thread.sqlite3")
    monkeypatch.setattr(parse_pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(parse_pool, "POOL_MIN_BYTES", 1)
    in_pool = await memberships(tmp_path / "pool.sqlite3")
    assert in_pool == in_thread
    assert len(in_pool) > 1000


async def _memberships(db_path: Path, settings: Settings) -> list[tuple]:  # type: ignore[type-arg]
    database = await open_db(db_path)
    try:
        summary = await reconcile(database, settings)
        assert summary.parsed_files == summary.files_seen
        rows = await database.fetchall(
            "SELECT f.path, m.strategy, m.ordinal, m.chunk_id, m.start_line, m.end_line"
            " FROM memberships m JOIN files f ON f.id = m.file_id ORDER BY 1, 2, 3"
        )
        return [tuple(r) for r in rows]
    finally:
        await database.close()


async def test_this_process_parses_while_the_pool_starts(
    corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.ingest import parse_pool
    from tests import pool_faults

    settings = make_settings(tmp_path)
    in_thread = await _memberships(tmp_path / "thread.sqlite3", settings)
    here: list[str] = []

    def counted(job: FileJob, config: ChunkConfig) -> FileOutcome:
        here.append(job.rel_path)
        return process_file(job, config)

    monkeypatch.setattr(parse_pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(parse_pool, "process_file", counted)
    monkeypatch.setattr(parse_pool, "process_files", pool_faults.process_files_late)
    helped = await _memberships(tmp_path / "helped.sqlite3", settings)
    assert helped == in_thread
    # The pool's first answer took 1.5 s: this process parsed files meanwhile, from the end.
    assert here
    assert len(here) < len(in_thread)


async def test_a_broken_pool_leaves_its_files_to_this_process(
    corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.ingest import parse_pool
    from tests import pool_faults

    settings = make_settings(tmp_path)
    in_thread = await _memberships(tmp_path / "thread.sqlite3", settings)
    monkeypatch.setattr(parse_pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(parse_pool, "process_files", pool_faults.process_files_or_die)
    assert await _memberships(tmp_path / "broken.sqlite3", settings) == in_thread


async def test_a_pool_that_breaks_while_jobs_are_submitted_loses_no_file(
    corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker can die between two submissions: the chunk whose `submit` raises was taken
    from the queue but is in no future (CI lost its 4 files once, in the test above)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from pipeline.ingest import parse_pool

    class BreaksAtTheThirdSubmit(ProcessPoolExecutor):
        submitted = 0

        def submit(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def, override]
            BreaksAtTheThirdSubmit.submitted += 1
            if BreaksAtTheThirdSubmit.submitted == 3:
                raise BrokenProcessPool("a worker died")
            return super().submit(*args, **kwargs)  # type: ignore[arg-type]

    settings = make_settings(tmp_path)
    in_thread = await _memberships(tmp_path / "thread.sqlite3", settings)
    monkeypatch.setattr(parse_pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(parse_pool, "ProcessPoolExecutor", BreaksAtTheThirdSubmit)
    assert await _memberships(tmp_path / "broken.sqlite3", settings) == in_thread
    assert BreaksAtTheThirdSubmit.submitted == 3


async def test_cancelled_reconcile_stops_its_pool_and_leaves_consistent_state(
    db: Database, corpus_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from pipeline.ingest import batch, parse_pool

    monkeypatch.setattr(parse_pool, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(batch, "FLUSH_FILES", 5)
    settings = make_settings(tmp_path)
    with anyio.fail_after(120):  # a hang guard, not a timing assertion
        async with anyio.create_task_group() as tg:

            def cancel_midway(done: int, total: int) -> None:
                if done >= 12:
                    tg.cancel_scope.cancel()

            tg.start_soon(partial(reconcile, db, settings, progress=cancel_midway))
    assert tg.cancel_scope.cancel_called
    # Whatever landed is whole: every live file has its memberships.
    orphans = await db.scalar(
        "SELECT count(*) FROM files f WHERE f.status = 'live'"
        " AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.file_id = f.id)"
    )
    assert orphans == 0
    finished = await reconcile(db, settings)  # the next pass completes the work
    assert await db.scalar("SELECT count(*) FROM files WHERE status = 'live'") == (
        finished.files_seen
    )


async def test_commits_mode_records_oversized_and_binary_blobs(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    docs = corpus_repo / "docs"
    (docs / "big.md").write_bytes(b"# Big\n\n" + b"word " * 60_000)  # 300 kB
    (docs / "blob.md").write_bytes(b"\x00\x01\x02 binary")
    git(corpus_repo, "add", "-A")
    git(corpus_repo, "commit", "-q", "-m", "odd files")
    settings = dataclasses.replace(
        make_settings(tmp_path),
        sources=dataclasses.replace(make_settings(tmp_path).sources, max_file_bytes=250_000),
    )
    summary = await reconcile(db, settings, mode="commits")
    rows = {
        r[0]: (r[1], r[2])
        for r in await db.fetchall(
            "SELECT path, status, reason FROM files WHERE path LIKE 'docs/%.md'"
        )
    }
    assert rows["docs/big.md"] == ("skipped", "too_large")
    assert rows["docs/blob.md"] == ("skipped", "binary")
    assert summary.skipped == 2
    assert rows["docs/source/user-guide/introduction.md"] == ("live", None)


async def test_reconcile_writes_with_a_bigger_page_cache_and_restores_it(
    db: Database, corpus_repo: Path, tmp_path: Path
) -> None:
    from state import file_changes

    sizes: list[int] = []
    apply_changes = file_changes.apply_changes

    async def recording(db_: Database, repo: str, changes: list[file_changes.FileChange]) -> object:
        sizes.append(await db_.scalar("PRAGMA cache_size"))
        return await apply_changes(db_, repo, changes)

    before = await db.scalar("PRAGMA cache_size")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_changes, "apply_changes", recording)
        await reconcile(db, make_settings(tmp_path))
    assert sizes
    assert set(sizes) == {-file_changes.BULK_CACHE_MIB * 1024}
    assert await db.scalar("PRAGMA cache_size") == before


def test_pool_workers_do_not_run_the_main_script_again(tmp_path: Path) -> None:
    """The pool's server imports the main script once; its forked workers do not run it
    again (on Python < 3.13 every worker did: gh-126631, ~0.1 CPU-s each per reconcile)."""
    import subprocess
    import sys

    log = tmp_path / "ran.log"
    script = tmp_path / "main_script.py"
    script.write_text(
        "import os\n"
        f"open({str(log)!r}, 'a').write(f'{{os.getpid()}} {{__name__}}\\n')\n"
        "if __name__ == '__main__':\n"
        "    from concurrent.futures import ProcessPoolExecutor\n"
        "    from pipeline.ingest.parse_pool import pool_context\n"
        "    with ProcessPoolExecutor(2, mp_context=pool_context()) as pool:\n"
        "        pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "    print(' '.join(map(str, sorted(pids))))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    workers = {int(pid) for pid in out.split()}
    runs = [line.split() for line in log.read_text().splitlines()]
    assert workers
    assert [name for _, name in runs].count("__main__") == 1
    assert [name for _, name in runs].count("__mp_main__") <= 1  # the server, once
    assert not workers & {int(pid) for pid, _ in runs}, "a worker ran the main script"


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python preloads __main__ itself")
def test_a_process_without_a_main_script_clears_an_inherited_main_path() -> None:
    """A child started with `-c` (or `-m`) that inherited a script path must not hand its
    pool's server someone else's script."""
    import subprocess

    script = (
        "import os\n"
        "os.environ['DOCTUNE_POOL_MAIN_PATH'] = '/nonexistent/doctune'\n"
        "from pipeline.ingest.pool_main import MAIN_PATH_ENV, share_main_path\n"
        "share_main_path()\n"
        "print(MAIN_PATH_ENV in os.environ)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_the_pool_preload_leaves_workers_nothing_to_import(corpus_dir: Path) -> None:
    """After the forkserver's preload, chunking every corpus page (Markdown and RST with
    their directives) and code of each AST language (Rust with and without a body to skip)
    imports no further module and makes no parser: forked workers inherit the parsers
    instead of each making them on its first file."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import pipeline.ingest.pool_preload\n"
        "from pipeline.ingest import code_ast\n"
        "from pipeline.ingest.chunk import Sizes\n"
        "from pipeline.ingest.parse import ChunkConfig, chunk_text\n"
        "from pipeline.ingest.sources import language_for\n"
        "before, parsers = set(sys.modules), code_ast._parser.cache_info().misses\n"
        "config = ChunkConfig(('heading', 'paragraph', 'fixed', 'code_fixed', 'code_ast'),"
        " Sizes(200, 1500, 150), Sizes(200, 2000, 200))\n"
        "n = 0\n"
        f"for p in sorted(Path({str(corpus_dir)!r}).rglob('*')):\n"
        "    if p.suffix in ('.md', '.rst'):\n"
        "        n += len(chunk_text(p.read_text(), language_for(p.name), 'doc', config)[0])\n"
        "for lang, src in (('rust', 'fn a() {}'), ('rust', 'fn b() {\\n    g(41);\\n}\\n'),"
        " ('python', 'def a(): pass'), ('c', 'int a(void) { return 0; }'),"
        " ('cpp', 'class A {};')):\n"
        "    n += len(chunk_text(src, lang, 'code', config)[0])\n"
        "new_parsers = code_ast._parser.cache_info().misses - parsers\n"
        "print(n, new_parsers, sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split(" ", 2)
    assert int(out[0]) > 1000
    assert out[1:] == ["0", "[]\n"]  # no parser made, no module imported
