"""`doctune run` end to end: a real daemon process, the Ollama stand-in, git repos, signals."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import git
from daemon_proc import DaemonProcess, daemon_config, free_port, read_jsonl, sql, wait_until
from ollama_fake import FakeOllama

from daemon.cli import main

TESTS_DIR = Path(__file__).resolve().parent


def _vocabulary() -> list[str]:
    """Distinct words from the real corpus, so generated pages read differently."""
    corpus = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "datafusion"
    words: set[str] = set()
    for path in sorted(corpus.rglob("*.md"))[:30]:
        words.update(re.findall(r"\b[a-z]{5,12}\b", path.read_text(errors="replace").lower()))
    return sorted(words)


WORDS = _vocabulary()


def _doc(title: str, seed: int, sentences: int = 6) -> str:
    """A small markdown page of sentences drawn at random (seeded) from the vocabulary."""
    rng = random.Random(seed)
    body = [" ".join(rng.sample(WORDS, 12)).capitalize() + "." for _ in range(sentences)]
    return f"# {title} {seed}\n\n" + " ".join(body) + "\n"


def _make_repo(tmp: Path, n_files: int = 3, name: str = "notes") -> Path:
    repo = tmp / "sources" / name
    (repo / "docs").mkdir(parents=True)
    for i in range(n_files):
        (repo / "docs" / f"page{i:04d}.md").write_text(_doc(f"Page {i}", i))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def _db(tmp: Path) -> Path:
    return tmp / "state" / "doctune.sqlite3"


def _queue_drained(tmp: Path) -> bool:
    rows = sql(
        _db(tmp),
        "SELECT SUM(state IN ('pending', 'leased')), COUNT(*) FROM jobs",
    )
    busy, total = rows[0]
    return bool(total) and not busy


def _pairs_for(tmp: Path, path: str) -> list[tuple[str | None, str | None]]:
    return [
        (r[0], r[1])
        for r in sql(_db(tmp), "SELECT git_commit, retired_at FROM pairs WHERE path = ? ", (path,))
    ]


def _dead_for_other_reasons(tmp: Path) -> list[tuple[object, ...]]:
    """Dead jobs whose reason is not a judgement of the generated content."""
    return sql(
        _db(tmp),
        "SELECT id, dead_reason FROM jobs WHERE state = 'dead'"
        " AND dead_reason NOT LIKE 'rejected:%'",
    )


@pytest.fixture
def started() -> Iterator[list[DaemonProcess]]:
    """Daemons started by a test; any still running at the end are killed."""
    procs: list[DaemonProcess] = []
    yield procs
    for d in procs:
        d.close()


def _start(
    tmp: Path,
    fake: FakeOllama,
    started: list[DaemonProcess],
    env: dict[str, str] | None = None,
    **sections: dict[str, object],
) -> DaemonProcess:
    port = free_port()
    config = daemon_config(tmp, fake.url, port, **sections)
    d = DaemonProcess(tmp, config, port, env)
    started.append(d)
    d.wait_ready()
    return d


def test_ready_then_a_saved_file_reaches_the_generator(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    repo = _make_repo(tmp_path)
    d = _start(tmp_path, ollama_fake, started)
    wait_until(lambda: _queue_drained(tmp_path), 60, "initial queue drained")
    calls_before = len(ollama_fake.generation_calls())
    (repo / "docs" / "fresh.md").write_text(_doc("Fresh", 99))
    wait_until(lambda: _pairs_for(tmp_path, "docs/fresh.md"), 30, "a pair for the saved file")
    assert len(ollama_fake.generation_calls()) > calls_before
    assert d.stop() == 0


def test_commits_mode_ingests_a_commit_but_not_an_uncommitted_edit(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    repo = _make_repo(tmp_path)
    d = _start(tmp_path, ollama_fake, started, watch={"mode": "commits", "debounce_ms": 100})
    wait_until(lambda: _queue_drained(tmp_path), 60, "initial queue drained")
    calls_before = len(ollama_fake.generation_calls())
    (repo / "docs" / "draft.md").write_text(_doc("Draft", 42))
    time.sleep(2.0)  # twenty debounce windows: an edit would have been picked up by now
    assert _pairs_for(tmp_path, "docs/draft.md") == []
    assert len(ollama_fake.generation_calls()) == calls_before
    git(repo, "add", "docs/draft.md")
    git(repo, "commit", "-q", "-m", "draft")
    head = git(repo, "rev-parse", "HEAD").strip()
    wait_until(lambda: _pairs_for(tmp_path, "docs/draft.md"), 30, "a pair for the commit")
    assert {commit for commit, _ in _pairs_for(tmp_path, "docs/draft.md")} == {head}
    assert d.stop() == 0


@pytest.mark.slow
def test_sigterm_during_generation_drains_and_loses_nothing(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    _make_repo(tmp_path, n_files=12)
    ollama_fake.latency_s = 1.0
    ollama_fake.slots = 2
    d = _start(tmp_path, ollama_fake, started, daemon={"drain_timeout_s": 5.0})
    wait_until(lambda: ollama_fake.in_flight >= 1, 30, "a request in flight")
    began = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    assert time.monotonic() - began < 5.0 + 3.0
    d.close()
    answered = [c for c in ollama_fake.generation_calls() if c.outcome == "ok" and c.chunk_sha]
    (n_pairs,) = sql(_db(tmp_path), "SELECT COUNT(*) FROM pairs")[0]
    (n_rejected,) = sql(
        _db(tmp_path), "SELECT COUNT(*) FROM jobs WHERE dead_reason LIKE 'rejected:%'"
    )[0]
    # Every answer that came back was stored (or judged and rejected, with a reason).
    assert n_pairs + n_rejected == len(answered) > 0
    # In-flight requests were allowed to finish, not cut off by the shutdown.
    assert not [c for c in ollama_fake.generation_calls() if c.outcome == "cancelled"]
    assert _dead_for_other_reasons(tmp_path) == []
    # Restarted, the daemon finishes the rest: every job done, one pair each.
    ollama_fake.latency_s = 0.0
    d2 = _start(tmp_path, ollama_fake, started)
    wait_until(lambda: _queue_drained(tmp_path), 60, "queue drained after restart")
    jobs = dict(sql(_db(tmp_path), "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    assert set(jobs) <= {"done", "dead"}
    assert _dead_for_other_reasons(tmp_path) == []  # only content rejections, none lost
    (n_pairs,) = sql(_db(tmp_path), "SELECT COUNT(*) FROM pairs")[0]
    assert n_pairs == jobs["done"]
    assert d2.stop() == 0


def test_sigusr1_storm_schedules_one_retrain_and_cli_retrain_signals(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    _make_repo(tmp_path)
    trainer_log = tmp_path / "trainer.jsonl"
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "FAKE_TRAINER_LOG": str(trainer_log),
    }
    daemon_section = {"retrain_entrypoint": "fake_trainer:retrain", "retrain_coalesce_s": 1.5}
    d = _start(tmp_path, ollama_fake, started, env=env, daemon=daemon_section)
    for _ in range(10):
        d.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
    wait_until(lambda: len(read_jsonl(trainer_log)) == 1, 30, "one retrain")
    time.sleep(2.5)  # past the coalesce window and the run: still one
    runs = read_jsonl(trainer_log)
    assert [r["trigger"] for r in runs] == ["signal"]
    assert runs[0]["torch_loaded"] is False
    # `doctune retrain` finds the daemon through its pidfile.
    config = tmp_path / "doctune.toml"
    result = CliRunner().invoke(main, ["--config", str(config), "retrain"])
    assert result.exit_code == 0, result.output
    assert f"pid {d.proc.pid}" in result.output
    assert "queued the retrain" in result.output
    wait_until(lambda: len(read_jsonl(trainer_log)) == 2, 30, "the CLI-requested retrain")
    assert d.stop() == 0


def test_status_endpoint_is_get_only_host_checked_and_torch_free(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    _make_repo(tmp_path)
    d = _start(tmp_path, ollama_fake, started)
    wait_until(lambda: _queue_drained(tmp_path), 60, "initial queue drained")
    status = d.status()
    assert status["files"]["by_status"]["live"] == 3
    assert status["daemon"]["phase"] == "running"
    assert status["daemon"]["process"]["heavy_modules_loaded"] == []
    post = urllib.request.Request(d.url + "/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 405
    foreign = urllib.request.Request(d.url + "/status", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(foreign, timeout=10)
    assert forbidden.value.code == 403
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as resp:
        assert b"process_resident_memory_bytes" in resp.read()
    assert d.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_daemon_running(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    repo = _make_repo(tmp_path)
    d = _start(tmp_path, ollama_fake, started)
    config = tmp_path / "doctune.toml"
    good = config.read_text()
    config.write_text(good + "\n[watch]\nmode = 'sometimes'\n")  # duplicate table + bad value
    d.proc.send_signal(signal.SIGHUP)
    assert "reload failed" in d.notify.wait_for("READY=1", 30, proc=d.proc)
    assert d.proc.poll() is None
    assert any(
        json.loads(line).get("event") == "config_reload_failed"
        for line in d.log_text().splitlines()
        if line.startswith("{")
    )
    # Still watching on the old settings.
    (repo / "docs" / "after.md").write_text(_doc("After", 77))
    wait_until(lambda: _pairs_for(tmp_path, "docs/after.md"), 30, "a pair after the bad reload")
    assert d.stop() == 0


@pytest.mark.slow
def test_thousand_file_checkout_round_trip_makes_no_llm_call(
    tmp_path: Path, ollama_fake: FakeOllama, started: list[DaemonProcess]
) -> None:
    repo = _make_repo(tmp_path, n_files=1000)
    d = _start(tmp_path, ollama_fake, started, generator={"concurrency": 8})
    ollama_fake.slots = 8
    wait_until(lambda: _queue_drained(tmp_path), 300, "initial queue drained")
    calls_before = len(ollama_fake.generation_calls())
    (live_pairs,) = sql(_db(tmp_path), "SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL")[0]
    git(repo, "checkout", "-q", "-b", "empty")
    git(repo, "rm", "-q", "-r", "docs")
    git(repo, "commit", "-q", "-m", "remove docs")

    def live_files() -> int:
        return int(sql(_db(tmp_path), "SELECT COUNT(*) FROM files WHERE status = 'live'")[0][0])

    wait_until(lambda: live_files() == 0, 120, "all files deleted")
    (retired,) = sql(_db(tmp_path), "SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL")[0]
    assert retired == 0  # every pair retired while its content is gone
    git(repo, "checkout", "-q", "main")
    wait_until(lambda: live_files() == 1000, 120, "all files back")
    wait_until(
        lambda: (
            sql(_db(tmp_path), "SELECT COUNT(*) FROM pairs WHERE retired_at IS NULL")[0][0]
            == live_pairs
        ),
        60,
        "pairs live again",
    )
    time.sleep(1.0)
    assert len(ollama_fake.generation_calls()) == calls_before
    assert d.stop() == 0


def test_daemon_code_paths_never_import_torch() -> None:
    """Everything the daemon process loads, including the trainer entry point, is torch-free
    (training runs in a child process)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from daemon.components import real_components\n"
        "import daemon.process\n"
        "real_components()\n"
        "import daemon.cli.retrain, pipeline.retrain\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
