"""`doctune run --once`, `pairs`, `export`, `status` end to end: real reconcile, real HTTP."""

from __future__ import annotations

import json
import shutil
import sqlite3
from hashlib import sha256
from pathlib import Path

from click.testing import CliRunner
from conftest import git
from ollama_fake import FakeOllama

from daemon.cli import main

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "datafusion"
DOCS = [
    "docs/source/contributor-guide/architecture.md",
    "docs/source/contributor-guide/communication.md",
    "docs/source/library-user-guide/catalogs.md",
]


def make_repo(tmp_path: Path, docs: list[str] = DOCS) -> Path:
    """A small git repo `sources/datafusion` with a few of the corpus' docs."""
    repo = tmp_path / "sources" / "datafusion"
    for rel in docs:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / rel, repo / rel)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs")
    return repo


def write_config(tmp_path: Path, url: str, **generator: object) -> Path:
    """A doctune.toml pointing at `url` with fast retry/breaker timings."""
    values: dict[str, object] = {
        "backend": "ollama",
        "mode": "qa",
        "url": url,
        "concurrency": 4,
        "timeout_s": 10.0,
        "lease_s": 30.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_probe_s": 0.05,
        "outage_give_up_s": 2.0,
        **generator,
    }
    lines = ['[paths]\nstate_dir = "data"\nmodels_dir = "models"\n[sources]\ndir = "sources"']
    lines.append('[chunking]\nstrategies = ["heading", "paragraph"]\n[generator]')
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "doctune.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def doctune(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def db_rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "data" / "doctune.sqlite3") as conn:
        return list(conn.execute(sql))


def test_run_once_generates_one_pair_per_planned_chunk_then_nothing(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    make_repo(tmp_path)
    config = write_config(tmp_path, ollama_fake.url)
    code, out = doctune(config, "run", "--once")
    assert code == 0, out
    [(live_chunks,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM live_chunks")
    [(jobs,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM jobs")
    [(done,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE state = 'done'")
    [(repairs,)] = db_rows(tmp_path, "SELECT COALESCE(SUM(repairs), 0) FROM jobs")
    assert isinstance(live_chunks, int)
    assert isinstance(jobs, int)
    assert isinstance(repairs, int)
    assert live_chunks > 20
    # text shared by several strategies is asked about once (invariant 7)
    assert 0 < jobs < live_chunks
    # one call per planned chunk, plus one per recorded repair retry; nothing else
    assert len(ollama_fake.generation_calls()) == jobs + repairs
    [(pairs,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM pairs")
    assert pairs == done
    assert (tmp_path / "data" / "datafusion_qa.jsonl").read_text().count("\n") == pairs
    ollama_fake.reset_stats()
    code, out = doctune(config, "run", "--once")
    assert code == 0, out
    assert ollama_fake.generation_calls() == []


def test_editing_a_file_regenerates_only_its_changed_chunks(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    repo = make_repo(tmp_path)
    config = write_config(tmp_path, ollama_fake.url)
    assert doctune(config, "run", "--once")[0] == 0
    before = db_rows(tmp_path, "SELECT id FROM jobs")
    doc = repo / DOCS[1]
    text = doc.read_text()
    paragraphs = text.split("\n\n")
    victim = max(range(len(paragraphs)), key=lambda i: len(paragraphs[i]))
    removed = paragraphs[victim]
    paragraphs[victim] = (
        "The DataFusion community meets in a monthly video call where maintainers review the "
        "roadmap, triage long-standing issues and welcome first-time contributors to the project."
    )
    doc.write_text("\n\n".join(paragraphs))
    ollama_fake.reset_stats()
    code, out = doctune(config, "run", "--once")
    assert code == 0, out
    called = {c.chunk_sha for c in ollama_fake.generation_calls()}
    new_chunks = {sha256(str(r[0]).encode()).hexdigest() for r in db_rows(
        tmp_path, "SELECT text FROM chunks WHERE id NOT IN (SELECT chunk_id FROM jobs"
        " WHERE created_at < (SELECT MAX(created_at) FROM jobs))"
    )}  # fmt: skip
    assert called
    assert called <= new_chunks  # only chunks the edit created went to the LLM
    assert len(called) < len(before) / 4
    retired = db_rows(
        tmp_path, "SELECT c.text FROM pairs p JOIN chunks c ON c.id = p.chunk_id"
        " WHERE p.retired_at IS NOT NULL"
    )  # fmt: skip
    words = " ".join(removed.split()[3:9])  # a stretch of the removed paragraph
    assert retired
    assert all(words in " ".join(str(r[0]).split()) for r in retired)
    exported = (tmp_path / "data" / "datafusion_qa.jsonl").read_text()
    [(live,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL")
    assert exported.count("\n") == live


def test_run_once_exits_1_when_the_generator_is_unreachable(tmp_path: Path) -> None:
    make_repo(tmp_path, DOCS[:1])
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, out = doctune(config, "run", "--once")
    assert code == 1
    assert "unreachable" in out


def test_run_once_exits_1_with_a_pull_hint_when_the_model_is_missing(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    make_repo(tmp_path, DOCS[:1])
    config = write_config(tmp_path, ollama_fake.url, model="qwen2.5:7b")
    code, out = doctune(config, "run", "--once")
    assert code == 1
    assert "ollama pull qwen2.5:7b" in out
    code, out = doctune(config, "status", "--json")
    status = json.loads(out)
    assert status["generator"]["state"] == "model_missing"
    assert status["jobs"]["pending"] > 0


def test_a_bad_gguf_is_one_error_naming_the_file(tmp_path: Path) -> None:
    make_repo(tmp_path, DOCS[:1])
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    config = write_config(tmp_path, "http://127.0.0.1:9", backend="auto", model_path=str(bad))
    code, out = doctune(config, "run", "--once")
    assert code == 1
    assert f"model file {bad} is not a GGUF file" in out
    assert "Traceback" not in out


def test_a_refused_request_stops_the_run_and_requeue_brings_dead_jobs_back(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    make_repo(tmp_path, DOCS[:1])
    ollama_fake.rate_400 = 1.0
    config = write_config(tmp_path, ollama_fake.url, concurrency=1)
    code, out = doctune(config, "run", "--once")
    assert code == 1
    assert "refuses doctune's requests (400)" in out
    assert len(ollama_fake.generation_calls()) == 1
    code, out = doctune(config, "status")
    assert "generator: failing" in out
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'") == [(0,)]

    ollama_fake.rate_400, ollama_fake.rate_truncated = 0.0, 1.0
    config = write_config(tmp_path, ollama_fake.url, concurrency=1, max_attempts=1)
    assert doctune(config, "run", "--once")[0] == 0
    [(dead,)] = db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
    assert isinstance(dead, int)
    assert dead > 0
    assert doctune(config, "requeue", "--reason", "http_500")[1].startswith("requeued 0 ")
    code, out = doctune(config, "requeue", "--reason", "truncated", "--repo", "datafusion")
    assert out.startswith(f"requeued {dead} dead jobs")
    ollama_fake.rate_truncated = 0.0
    assert doctune(config, "run", "--once")[0] == 0
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'") == [(0,)]


def test_pairs_status_and_exports(tmp_path: Path, ollama_fake: FakeOllama) -> None:
    make_repo(tmp_path, DOCS[:2])
    config = write_config(tmp_path, ollama_fake.url)
    assert doctune(config, "run", "--once")[0] == 0
    code, out = doctune(config, "pairs", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert rows
    assert {"question", "answer", "repo", "path", "git_commit", "strategy"} <= set(rows[0])
    assert rows[0]["git_commit"]
    code, out = doctune(config, "pairs", "--limit", "2")
    assert out.count("Q: ") == 2
    code, out = doctune(config, "status")
    assert "pairs:" in out
    assert "generator: ok" in out
    for fmt in ("jsonl", "parquet", "hf"):
        code, out = doctune(config, "export", "--format", fmt, "--out", str(tmp_path / fmt))
        assert code == 0, out
        assert f"exported {len(rows)} pairs" in out
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "parquet").num_rows == len(rows)
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "hf")).num_rows == len(rows)
