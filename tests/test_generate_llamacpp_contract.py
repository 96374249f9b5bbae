"""The recorded contract: real llama.cpp (llama-cpp-python's server) on SmolLM2, real chunks.

1. `backend = "openai"` against the real server, through a recording proxy: pairs are stored
   with provenance (no dead jobs from the refused json_schema), a rerun makes 0 calls. With
   DOCTUNE_RECORD_FIXTURES=1 the exchanges are written to tests/fixtures/llamacpp/, which the
   fast tests replay through the stand-in.
2. The embedded backend through the real CLI: `run --once` killed with SIGKILL mid-run loses
   nothing (its engine dies with it), the next run finishes, the one after makes 0 calls.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from gen_helpers import CORPUS, corpus_paragraphs, gen_settings, seed_chunks
from recording_proxy import RecordingProxy

from pipeline.clients.llamacpp import LlamaServer
from pipeline.clients.llamacpp_spec import LlamaServerSpec, default_gguf_path
from pipeline.generate.backend import forget_resolutions
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.prompt import BT_PROMPT_VERSION
from pipeline.generate.service import GenerationService
from pipeline.settings import Settings
from state.db import Database, open_db
from state.generation_status import job_counts

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "llamacpp"
RUN_CLI = "import sys; from daemon.cli import main; sys.exit(main())"
CONTRACT_CHUNKS = 3
ALIAS = "smollm2-135m"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(tmp_path / "data" / "doctune.sqlite3")
    yield database
    await database.close()


def _real_server_settings(tmp_path: Path, proxy_url: str, **overrides: object) -> Settings:
    """The openai backend through the recording proxy, one request at a time, patient."""
    return gen_settings(
        tmp_path,
        proxy_url + "/v1",
        backend="openai",
        concurrency=1,
        timeout_s=300.0,
        lease_s=600.0,
        **overrides,
    )


async def test_openai_backend_on_a_real_llama_cpp_server(db: Database, tmp_path: Path) -> None:
    forget_resolutions()
    spec = LlamaServerSpec(model_path=default_gguf_path(), model_alias=ALIAS, n_ctx=2048)
    await seed_chunks(db, corpus_paragraphs(CONTRACT_CHUNKS))
    overrides = {"model": ALIAS, "mode": "backtranslate"}
    async with LlamaServer(spec) as server, RecordingProxy(server.base_url).serving() as proxy:
        settings = _real_server_settings(tmp_path, proxy.url, **overrides)
        await ensure_jobs(db, settings.generator)
        first = await GenerationService(db, settings).run_once()
        again = await GenerationService(db, settings).run_once()

    refused = proxy.exchanges[0]
    assert refused["request"]["response_format"]["type"] == "json_schema"
    assert refused["status"] == 500
    assert "json_object" in refused["response"]["error"]["message"]
    assert all(e["status"] == 200 for e in proxy.exchanges[1:])
    counts = await job_counts(db)
    assert counts["pending"] == counts["leased"] == 0
    dead = [r[0] for r in await db.fetchall("SELECT dead_reason FROM jobs WHERE state='dead'")]
    assert all(reason.startswith("rejected:") for reason in dead)  # content, never transport
    assert first.pairs_stored >= 1
    rows = await db.fetchall(
        "SELECT p.question, p.answer, p.model, p.prompt_version, p.path, p.start_line, c.text,"
        " p.completion_tokens FROM pairs p JOIN chunks c ON c.id = p.chunk_id"
    )
    assert len(rows) == first.pairs_stored
    for question, answer, model, version, path, start_line, text, tokens in rows:
        assert question
        assert answer in text  # backtranslation: the answer is the chunk's own words
        assert (model, version, path) == (ALIAS, BT_PROMPT_VERSION, "docs/guide.md")
        assert start_line >= 1
        assert tokens > 0
    assert again.calls == 0

    if os.environ.get("DOCTUNE_RECORD_FIXTURES"):
        proxy.save(FIXTURES / "contract.jsonl")
        questions = [r[0] for r in await db.fetchall("SELECT question FROM pairs ORDER BY id")]
        meta = {
            "recorded_with": "llama-cpp-python server, SmolLM2-135M-Instruct Q4_1",
            "chunks": CONTRACT_CHUNKS,
            "generator": overrides,
            "job_counts": counts,
            "questions": questions,
        }
        (FIXTURES / "contract.meta.json").write_text(json.dumps(meta, indent=1) + "\n")


async def test_a_cut_off_reply_is_the_same_reply_again_so_it_is_repaired(
    db: Database, tmp_path: Path
) -> None:
    """Real llama.cpp: the same request with the same seed is the same reply, cut off at the
    same token, so a plain retry would spend its calls on it again; the repair's feedback
    changes the request, and a job cut off again is dead."""
    forget_resolutions()
    spec = LlamaServerSpec(model_path=default_gguf_path(), model_alias=ALIAS, n_ctx=2048)
    await seed_chunks(db, corpus_paragraphs(1))
    async with LlamaServer(spec) as server, RecordingProxy(server.base_url).serving() as proxy:
        settings = _real_server_settings(
            tmp_path,
            proxy.url,
            model=ALIAS,
            mode="backtranslate",
            num_predict=12,  # a question cannot end within 12 tokens
            max_attempts=5,
        )
        await ensure_jobs(db, settings.generator)
        await GenerationService(db, settings).run_once()
        asked = [e for e in proxy.exchanges if e["status"] == 200]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.base_url}/v1/chat/completions", json=asked[0]["request"]
            ) as resp,
        ):
            again = await resp.json()

    assert [e["response"]["choices"][0]["finish_reason"] for e in asked] == ["length", "length"]
    first = asked[0]["response"]["choices"][0]["message"]["content"]
    assert again["choices"][0]["message"]["content"] == first
    assert asked[0]["request"]["messages"] != asked[1]["request"]["messages"]
    assert "cut off at the length limit" in asked[1]["request"]["messages"][-1]["content"]
    rows = await db.fetchall("SELECT state, dead_reason, attempts, repairs FROM jobs")
    assert [tuple(r) for r in rows] == [("dead", "rejected:truncated", 0, 1)]


def _config(tmp: Path) -> Path:
    docs = tmp / "sources" / "datafusion" / "docs"
    docs.mkdir(parents=True)
    sections = [f"## Part {i}\n\n{text}\n" for i, text in enumerate(corpus_paragraphs(4), 1)]
    (docs / "guide.md").write_text("# Guide\n\n" + "\n".join(sections), encoding="utf-8")
    config = tmp / "doctune.toml"
    config.write_text(
        '[paths]\nstate_dir = "data"\n[sources]\ndir = "sources"\n'
        '[chunking]\nstrategies = ["heading"]\n'
        '[generator]\nbackend = "llamacpp"\ntimeout_s = 300.0\nlease_s = 600.0\n'
    )
    assert CORPUS.exists()
    return config


def _run_once(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "--config", str(config), "run", "--once", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def _rows(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        return list(conn.execute(sql))


def _finished_jobs(db_path: Path) -> int:
    try:
        rows = _rows(db_path, "SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'dead')")
    except sqlite3.OperationalError:  # the run is still creating the schema
        return 0
    count = rows[0][0]
    assert isinstance(count, int)
    return count


def test_embedded_run_once_survives_sigkill_and_reruns_free(tmp_path: Path) -> None:
    config = _config(tmp_path)
    db_path = tmp_path / "data" / "doctune.sqlite3"
    proc = _run_once(config)
    engine: list[int] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill it after the first stored pair (or rejection)
        engine = engine or _children(proc.pid)
        if db_path.exists() and _finished_jobs(db_path):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        pytest.fail("no job finished within 600 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert engine, "the embedded engine ran as a child process"
    for pid in engine:  # PR_SET_PDEATHSIG: the engine does not outlive doctune
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"engine {pid} outlived the killed run")
    before = _rows(db_path, "SELECT job_id, idx, question FROM pairs ORDER BY id")

    second = _run_once(config)
    out, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["orphans_released"] + summary["jobs_done"] + summary["dead"] >= 1
    after = _rows(db_path, "SELECT job_id, idx, question FROM pairs ORDER BY id")
    assert after[: len(before)] == before  # nothing stored before the kill was lost
    assert len({(job, idx) for job, idx, _ in after}) == len(after)
    states = {
        str(r[0]): r[1] for r in _rows(db_path, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
    }
    assert set(states) <= {"done", "dead"}
    provenance = _rows(db_path, "SELECT DISTINCT model, prompt_version FROM pairs")
    assert provenance
    assert all(str(m).startswith("SmolLM2-135M-Instruct.Q4_1-") for m, _ in provenance)

    third = _run_once(config)
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["calls"] == 0


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]
