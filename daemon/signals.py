"""Signals: SIGTERM/SIGINT drain (bounded), SIGHUP config reload, SIGUSR1 retrain request."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import anyio
import structlog

from daemon.config import ConfigError, load_config
from daemon.status_publish import StatusPublishing
from pipeline.settings import Settings

__all__ = ["SignalHandling"]

log = structlog.get_logger(__name__)


class SignalHandling(StatusPublishing):
    """Turns process signals into a drain, a reload or a retrain request."""

    async def _handle_signals(self, main_scope: anyio.CancelScope) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        with anyio.open_signal_receiver(*wanted) as signals:
            async with anyio.create_task_group() as tg:
                async for signum in signals:
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        if self._draining:
                            log.warning("drain_hurried", signal=signal.Signals(signum).name)
                            self._drain_hurry.set()
                        else:
                            tg.start_soon(self._drain, main_scope, signal.Signals(signum).name)
                    elif self._draining:
                        log.info(
                            "signal_ignored_while_draining", signal=signal.Signals(signum).name
                        )
                    elif signum == signal.SIGHUP:
                        await self.reload()
                    elif signum == signal.SIGUSR1 and self._scheduler is not None:
                        self._scheduler.request("signal")

    async def _drain(self, main_scope: anyio.CancelScope, reason: str) -> None:
        """Stop claiming, let in-flight generation finish (bounded), stop everything else."""
        self._draining = True
        self.phase = "draining"
        timeout_s = self.settings.daemon.drain_timeout_s
        log.info("drain_started", signal=reason, timeout_s=timeout_s)
        self.notifier.stopping()
        if self._gen is not None:
            self._gen.stop_claiming()
        self._gen_backoff.cancel()
        self._watch_stop.set()
        # Watcher, reconciles, scheduler (cancelling a retrain kills its process group).
        self._work_scope.cancel()
        with anyio.move_on_after(timeout_s) as waited:
            async with anyio.create_task_group() as tg:

                async def hurry() -> None:
                    await self._drain_hurry.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(hurry)
                await self._gen_done.wait()
                tg.cancel_scope.cancel()
        if not self._gen_done.is_set():
            # Unfinished requests keep their leases; they expire and the jobs are claimed again.
            why = "timeout" if waited.cancelled_caught else "second signal"
            log.warning("drain_cut_short", reason=why, timeout_s=timeout_s)
            self._gen_scope.cancel()
        log.info("drain_finished")
        main_scope.cancel()

    async def reload(self) -> bool:
        """SIGHUP: re-read the config; a broken file keeps the old settings (and says why)."""
        self.notifier.reloading()
        try:
            new, _ = load_config(self.app.config_path)
        except ConfigError as exc:
            self._counters["reload_errors"] += 1
            self._last["reload_error"] = str(exc)
            log.error("config_reload_failed", kept="previous configuration", problems=exc.problems)
            self.notifier.ready(f"config reload failed, running on previous config: {exc}")
            return False
        old = self._settings
        new = _keep_restart_only(old, new)
        self._settings = new
        self._counters["reloads"] += 1
        self._last.pop("reload_error", None)
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        log.info("config_reloaded", changed_sections=changed)
        if old.daemon.log_level != new.daemon.log_level and not os.environ.get("DOCTUNE_LOG_LEVEL"):
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        if {"sources", "watch"} & set(changed):
            self._rediscover()
            self._restart_watcher()
        if "generator" in changed and self._gen is not None:
            self._gen_restart = True
            self._gen.stop_claiming()
        if self._scheduler is not None:
            self._scheduler.poke()
        self.notifier.ready(self._status_line())
        return True


def _keep_restart_only(old: Settings, new: Settings) -> Settings:
    """Keep settings that need a restart at their running values, with a warning."""
    if old.paths != new.paths:
        log.warning("reload_needs_restart", key="paths", kept=str(old.paths))
        new = dataclasses.replace(new, paths=old.paths)
    if old.daemon.status_listen != new.daemon.status_listen:
        kept = old.daemon.status_listen
        log.warning("reload_needs_restart", key="daemon.status_listen", kept=kept)
        new = dataclasses.replace(
            new, daemon=dataclasses.replace(new.daemon, status_listen=old.daemon.status_listen)
        )
    return new
