"""The daemon's parts one at a time, in process: generation supervisor, settings reload,
reconciler, status line. (The whole process, with real signals, is tests/test_daemon_process.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from daemon.config import ConfigError
from daemon.counters import DaemonCounters
from daemon.generation import GenerationSupervisor
from daemon.live_settings import LiveSettings
from daemon.reconciler import Reconciler
from daemon.status_publisher import StatusPublisher
from daemon.systemd_notify import Notifier
from daemon.training_scheduler import TrainingScheduler
from pipeline.settings import GeneratorSettings, PathsSettings, Settings
from state.db import Database, open_db

pytestmark = pytest.mark.anyio


class Log:
    """What the stand-in services did, in order; a test can wait for an entry."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._changed = anyio.Event()

    def append(self, entry: str) -> None:
        self.entries.append(entry)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, entry: str, times: int = 1) -> None:
        with anyio.fail_after(5):
            while self.entries.count(entry) < times:
                await self._changed.wait()


class Service:
    """A generation service that records its life; `serve()` ends as told."""

    def __init__(self, log: Log, model: str, *, gives_up: bool, inflight_s: float) -> None:
        self.log, self.model = log, model
        self._gives_up, self._inflight_s = gives_up, inflight_s
        self._stop = anyio.Event()
        self.log.append(f"start {model}")

    async def serve(self) -> None:
        if self._gives_up:
            return  # a fatal generator error: serve() gives up on its own
        await self._stop.wait()
        try:
            await anyio.sleep(self._inflight_s)
        except anyio.get_cancelled_exc_class():
            self.log.append(f"cancelled {self.model}")
            raise
        self.log.append(f"drained {self.model}")

    def stop_claiming(self) -> None:
        self._stop.set()

    def wake(self) -> None:
        self.log.append("wake")

    def stats(self) -> dict[str, Any]:
        return {"error": "model not found"} if self._gives_up else {"pairs_stored": 7}


def _settings(tmp_path: Path, model: str = "m1") -> Settings:
    return Settings(
        paths=PathsSettings(state_dir=tmp_path / "state"),
        generator=GeneratorSettings(model=model),
    )


def _supervisor(
    settings: Settings, counters: DaemonCounters, log: Log, **behaviour: Any
) -> GenerationSupervisor:
    gives_up = behaviour.get("gives_up", 0)
    inflight_s = behaviour.get("inflight_s", 0.0)

    def factory(db: Any, s: Settings) -> Service:
        nonlocal gives_up
        gives_up -= 1
        return Service(log, s.generator.model, gives_up=gives_up >= 0, inflight_s=inflight_s)

    return GenerationSupervisor(None, lambda: settings, factory, counters, retry_s=0.05)  # type: ignore[arg-type]


async def test_a_service_that_gives_up_is_restarted_and_its_error_noted(tmp_path: Path) -> None:
    counters, log = DaemonCounters(), Log()
    sup = _supervisor(_settings(tmp_path), counters, log, gives_up=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await log.wait_for("start m1", times=3)
        assert counters.last()["generation_error"] == "model not found"
        assert sup.stats() == {"pairs_stored": 7}  # the third one serves
        sup.stop_claiming()
        await sup.finish(5.0)
    assert log.entries == ["start m1", "start m1", "start m1", "drained m1"]


async def test_restart_starts_a_new_service_with_the_settings_in_force(tmp_path: Path) -> None:
    current = _settings(tmp_path)
    log = Log()

    def factory(db: Any, s: Settings) -> Service:
        return Service(log, s.generator.model, gives_up=False, inflight_s=0)

    sup = GenerationSupervisor(None, lambda: current, factory, DaemonCounters())  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await anyio.wait_all_tasks_blocked()
        current = _settings(tmp_path, model="m2")
        sup.restart()
        await log.wait_for("start m2")
        sup.stop_claiming()
        await sup.finish(5.0)
    assert log.entries == ["start m1", "drained m1", "start m2", "drained m2"]


@pytest.mark.parametrize("how", ["timeout", "hurry"])
async def test_a_stuck_drain_is_cut_short(tmp_path: Path, how: str) -> None:
    log = Log()
    sup = _supervisor(_settings(tmp_path), DaemonCounters(), log, inflight_s=600)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await anyio.wait_all_tasks_blocked()
        sup.stop_claiming()
        if how == "hurry":
            tg.start_soon(_later, 0.1, sup.hurry)
        with anyio.fail_after(5):
            await sup.finish(0.3 if how == "timeout" else 600)
    assert log.entries == ["start m1", "cancelled m1"]


async def _later(delay_s: float, fn: Any) -> None:
    await anyio.sleep(delay_s)
    fn()


def _write(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


async def test_reload_keeps_the_old_settings_when_the_file_is_broken(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = _write(tmp_path / "c.toml", f'[paths]\nstate_dir = "{state}"\n[generator]\nmodel = "a"\n')
    live = LiveSettings(_settings(tmp_path, model="a"), cfg)
    before = live()
    _write(cfg, "[generator]\nconcurrency = 0\nbogus = 1\n")
    with pytest.raises(ConfigError):
        live.reload()
    assert live() is before
    _write(cfg, f'[paths]\nstate_dir = "{tmp_path / "elsewhere"}"\n[generator]\nmodel = "b"\n')
    changed = live.reload()
    assert live().generator.model == "b"
    assert live().paths == before.paths  # paths need a restart: the running ones are kept
    assert "generator" in changed
    assert "paths" not in changed


@dataclasses.dataclass
class Repo:
    name: str
    root: Path

    def matches(self, rel_path: str) -> Literal["doc", "code"] | None:
        return "doc"


async def test_reconciles_are_counted_and_tell_the_daemon_about_new_jobs(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    counters = DaemonCounters()
    told: list[int] = []
    calls: list[dict[str, Any]] = []

    async def reconcile(db: Database, s: Settings, **kw: Any) -> dict[str, Any]:
        calls.append(kw)
        if kw["repos"] == ["broken"]:
            raise OSError("disk gone")
        return {"path": tmp_path}

    async def ensure_jobs(db: Database, gen: GeneratorSettings) -> int:
        return 3

    settings = _settings(tmp_path)
    rec = Reconciler(
        None,  # type: ignore[arg-type]
        lambda: settings,
        counters,
        discover_repos=lambda s: [Repo("r1", tmp_path / "r1")],
        reconcile=reconcile,
        ensure_jobs=ensure_jobs,
        on_reconciled=told.append,
    )
    rec.discover()
    assert rec.repos == ["r1"]
    await rec.reconcile(None, None, reason="startup")
    await rec.reconcile(["broken"], None, reason="watch")
    assert told == [3]  # a failed reconcile queues nothing and tells nobody
    counts, last = counters.counts(), counters.last()
    assert (counts["reconciles"], counts["new_jobs"], counts["reconcile_errors"]) == (1, 3, 1)
    assert last["reconcile"]["summary"] == {"path": str(tmp_path)}  # JSON-ready
    assert last["reconcile_error"] == "OSError: disk gone"


async def test_status_line_names_generation_retraining_and_a_failed_reload(
    tmp_path: Path,
) -> None:
    db = await open_db(tmp_path / "db.sqlite3")
    try:
        settings = _settings(tmp_path)
        counters, log = DaemonCounters(), Log()
        sup = _supervisor(settings, counters, log)
        publisher = StatusPublisher(
            Notifier(environ={}),
            lambda: settings,
            counters,
            config_path=None,
            phase=lambda: "running",
            repos=lambda: ["r1", "r2"],
            generation=sup,
            scheduler=TrainingScheduler(db, lambda: settings),
            serve=None,
            started_mono=0.0,
        )
        counters.add("reconciles", 4)
        assert (
            publisher.status_line() == "running: 2 repos, 4 reconciles, 0 changed paths, 0 new jobs"
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await anyio.wait_all_tasks_blocked()
            counters.note("reload_error", "bad")
            line = publisher.status_line()
            assert "generator None: 0 in flight, 7 pairs stored, 0 dead" in line
            assert line.endswith("last reload FAILED (old config kept)")
            stats = publisher.stats()
            assert stats["counters"]["reconciles"] == 4
            assert stats["repos"] == ["r1", "r2"]
            assert stats["scheduler"]["running"] is False
            assert stats["serve"] is None
            sup.stop_claiming()
            await sup.finish(5.0)
    finally:
        await db.close()
