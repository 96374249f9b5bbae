"""/metrics read back by Prometheus's own parser: labelled levels, event counters, a histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gen_helpers import corpus_paragraphs, gen_settings, seed_chunks
from ollama_fake import FakeOllama
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from daemon.counters import COUNTER_NAMES, DaemonCounters
from daemon.metrics import render_metrics
from pipeline.generate.plan import ensure_jobs
from pipeline.generate.service import GenerationService
from state.db import open_db
from state.status import snapshot

pytestmark = pytest.mark.anyio


def parse(status: dict[str, Any]) -> dict[str, tuple[str, list[Sample]]]:
    """family name -> (type, samples), as a Prometheus server would read the exposition."""
    text = render_metrics(status).decode("utf-8")
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def values(samples: list[Sample], label: str, name: str | None = None) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if name is None or s.name == name}


async def test_real_state_and_generation_counters_parse_with_labels(
    tmp_path: Path, ollama_fake: FakeOllama
) -> None:
    settings = gen_settings(tmp_path, ollama_fake.url)
    ollama_fake.rate_bad_content = 0.5  # some replies are rejected by validation
    ollama_fake.seed = 3
    db = await open_db(settings.paths.db_path)
    try:
        texts = corpus_paragraphs(12)
        await seed_chunks(db, texts[:8], strategy="paragraph")
        await seed_chunks(db, texts[6:], path="docs/other.md", strategy="heading")
        await ensure_jobs(db, settings.generator)
        service = GenerationService(db, settings)
        await service.run_once()
        status = {**await snapshot(db), "daemon": {"phase": "running", "counters": {}}}
        status["daemon"]["generation"] = service.stats()
    finally:
        await db.close()
    families = parse(status)
    gen = service.summary

    kind, jobs = families["doctune_jobs"]
    assert kind == "gauge"
    by_state = values(jobs, "state")
    assert set(by_state) == {"pending", "leased", "done", "dead"}
    assert by_state["done"] + by_state["dead"] == 12
    kind, chunks = families["doctune_chunks"]
    assert kind == "gauge"
    assert values(chunks, "strategy") == {"heading": 6, "paragraph": 8}
    assert values(families["doctune_pairs"][1], "state")["live"] == gen.pairs_stored

    kind, calls = families["doctune_llm_calls"]
    assert kind == "counter"
    assert [(s.name, s.value) for s in calls] == [("doctune_llm_calls_total", gen.calls)]
    assert families["doctune_pairs_stored"][1][0].value == gen.pairs_stored > 0
    kind, events = families["doctune_job_events"]
    assert kind == "counter"
    rejected = {s.labels["reason"]: s.value for s in events if s.labels["kind"] == "rejected"}
    assert sum(rejected.values()) == gen.repairs + gen.dead > 0
    outcomes = values(families["doctune_generation_jobs"][1], "outcome")
    assert outcomes["done"] == gen.jobs_done

    kind, latency = families["doctune_llm_call_duration_seconds"]
    assert kind == "histogram"
    buckets = [s for s in latency if s.name.endswith("_bucket") and s.labels["outcome"] == "ok"]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == gen.calls  # the stand-in never fails here: every call is "ok"
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)


def test_scheduler_and_daemon_events_are_counters_and_phase_is_a_label() -> None:
    status = {
        "snapshot_error": "OperationalError: database is locked",
        "daemon": {
            "phase": "draining",
            "repos": ["a", "b"],
            "counters": {"reconciles": 7, "watch_paths": 31, "reload_errors": 1},
            "scheduler": {"running": True, "requests": 3, "runs_ok": 2, "runs_failed": 1},
        },
    }
    families = parse(status)
    assert families["doctune_status_snapshot_ok"][1][0].value == 0
    assert values(families["doctune_daemon_phase"][1], "phase") == {"draining": 1}
    assert families["doctune_watched_repos"][1][0].value == 2
    for name, expected in (
        ("doctune_reconciles", 7),
        ("doctune_watch_changed_paths", 31),
        ("doctune_config_reload_errors", 1),
        ("doctune_retrain_requests", 3),
    ):
        kind, samples = families[name]
        assert kind == "counter"
        assert [(s.name, s.value) for s in samples] == [(name + "_total", expected)]
    kind, retrains = families["doctune_retrains"]
    assert kind == "counter"
    assert values(retrains, "outcome") == {"ok": 2, "failed": 1}
    assert families["doctune_retrain_running"][1][0].value == 1
    assert "process_cpu_seconds" in families  # prometheus_client's own process collector


def test_no_dimension_is_baked_into_a_metric_name() -> None:
    status = {
        "jobs": {"pending": 2, "leased": 0, "done": 5, "dead": 1},
        "chunks": {"stored": 9, "live": 8, "by_strategy": {"fixed": {"distinct": 3}}},
        "files": {"by_status": {"live": 3}, "by_kind": {"doc": 3}},
    }
    names = set(parse(status))
    assert not any(n.startswith(("doctune_jobs_", "doctune_chunks_by_")) for n in names)
    assert not any("pending" in n or "fixed" in n for n in names)


def test_every_daemon_counter_is_exported() -> None:
    """Each counter the daemon keeps (daemon/counters.py) shows up as its own *_total."""
    counters = DaemonCounters()
    for n, name in enumerate(COUNTER_NAMES, start=1):
        counters.add(name, n)
    families = parse({"daemon": {"phase": "running", "counters": counters.counts()}})
    exported = {
        s.value
        for _, samples in families.values()
        for s in samples
        if s.name.endswith("_total") and not s.labels
    }
    assert set(range(1, len(COUNTER_NAMES) + 1)) <= exported
