"""The settings in force: what every part of the daemon reads, replaced by a good SIGHUP reload."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import structlog

from daemon.config import load_config
from pipeline.settings import Settings

__all__ = ["LiveSettings"]

log = structlog.get_logger(__name__)


class LiveSettings:
    """Call it for the settings in force; `reload()` re-reads the config file.

    Parts are given this object as their settings provider (a `() -> Settings`), so they
    see a reload on their next read and never hold a stale copy.
    """

    def __init__(self, settings: Settings, config_path: Path | None) -> None:
        self._settings = settings
        self.config_path = config_path

    def __call__(self) -> Settings:
        return self._settings

    def reload(self) -> list[str]:
        """Re-read the config; returns the names of the sections that changed.

        A broken file raises `ConfigError` and leaves the settings in force untouched.
        Keys that need a restart keep their running values (with a warning).
        """
        new, _ = load_config(self.config_path)
        old = self._settings
        new = _keep_restart_only(old, new)
        self._settings = new
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        log.info("config_reloaded", changed_sections=changed)
        if old.daemon.log_level != new.daemon.log_level and not os.environ.get("DOCTUNE_LOG_LEVEL"):
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        return changed


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
