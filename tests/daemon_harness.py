"""Run the real Daemon in this process with recording stand-ins for ingest, generation and
training (used by tests/test_daemon_process.py as a subprocess: real signals, sockets, files).

usage: python tests/daemon_harness.py CONFIG CALLS_JSONL
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from daemon.components import Components
from daemon.config import load_config
from daemon.logsetup import configure_logging
from daemon.process import Daemon
from pipeline.settings import GeneratorSettings, Settings
from state.db import Database

CALLS = Path(sys.argv[2])


def record(kind: str, **fields: Any) -> None:
    with CALLS.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "at": time.time(), **fields}) + "\n")


@dataclass
class Repo:
    name: str
    root: Path

    def matches(self, rel_path: str) -> Literal["doc", "code"] | None:
        return "doc" if rel_path.endswith(".md") else None


def discover(settings: Settings) -> list[Repo]:
    assert settings.sources.dir is not None
    return [Repo(p.name, p) for p in sorted(settings.sources.dir.iterdir()) if p.is_dir()]


async def reconcile(db: Database, settings: Settings, **kwargs: Any) -> dict[str, Any]:
    record("reconcile", repos=kwargs.get("repos"), paths=kwargs.get("paths"))
    return {"changed": 0}


async def ensure_jobs(db: Database, gen: GeneratorSettings) -> int:
    return 0


class FakeGeneration:
    """Serves until told to stop claiming, then 'finishes in-flight work' for a while."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._stop = anyio.Event()
        self.model = settings.generator.model
        record("gen_start", model=self.model)

    async def serve(self) -> None:
        if os.environ.get("HARNESS_GEN_CRASH_S"):
            await anyio.sleep(float(os.environ["HARNESS_GEN_CRASH_S"]))
            raise RuntimeError("generation blew up")
        await self._stop.wait()
        await anyio.sleep(float(os.environ.get("HARNESS_INFLIGHT_S", "0")))
        record("gen_drained", model=self.model)

    def stop_claiming(self) -> None:
        self._stop.set()

    def wake(self) -> None:
        record("gen_wake")

    def stats(self) -> dict[str, Any]:
        return {"in_flight": 0, "model": self.model}


async def snapshot(db: Database) -> dict[str, Any]:
    return {"files": {"live": 0}}


async def retrain(db: Database, settings: Settings, *, trigger: str) -> str:
    record("retrain", trigger=trigger)
    await anyio.sleep(float(os.environ.get("HARNESS_RETRAIN_S", "0.2")))
    return "fake-run"


def main() -> int:
    settings, path = load_config(sys.argv[1])
    configure_logging(json=True, level="debug")
    real_ingest = os.environ.get("HARNESS_REAL_INGEST") == "1"
    if real_ingest:  # the ingest team's real discovery + reconcile + status snapshot
        from pipeline.ingest.reconcile import reconcile as real_reconcile
        from pipeline.ingest.sources import discover_repos
        from state.status import snapshot as real_snapshot

        async def recording_reconcile(db: Database, settings: Settings, **kwargs: Any) -> Any:
            summary = await real_reconcile(db, settings, **kwargs)
            record("reconcile", repos=kwargs.get("repos"), paths=kwargs.get("paths"))
            return summary

    components = Components(
        discover_repos=discover_repos if real_ingest else discover,
        reconcile=recording_reconcile if real_ingest else reconcile,
        ensure_jobs=ensure_jobs,
        generation=FakeGeneration,
        snapshot=real_snapshot if real_ingest else snapshot,
        retrain=retrain,
    )
    daemon = Daemon(settings, path, components)
    return anyio.run(daemon.run, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
