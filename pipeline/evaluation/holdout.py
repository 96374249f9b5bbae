"""Pages held out for evaluation (`[evaluation] holdout_globs`): recorded in the state after
every reconcile, so their chunks get no generation jobs and their pairs no training."""

from __future__ import annotations

import structlog

from pipeline.ingest.globs import GlobSet
from pipeline.settings import Settings
from state import evaluation as store
from state.db import Database

__all__ = ["sync_holdout"]

log = structlog.get_logger(__name__)


async def sync_holdout(db: Database, settings: Settings) -> int:
    """Rewrite the held-out page list from the globs (matched against repo-relative paths,
    or `repo/path` to name one repository); returns how many pages are held out."""
    globs = settings.evaluation.holdout_globs
    held: list[tuple[str, str]] = []
    if globs:
        matcher = GlobSet(globs)
        held = [
            (repo, path)
            for repo, path in await store.live_doc_files(db)
            if matcher.matches(path) or matcher.matches(f"{repo}/{path}")
        ]
    stopped = await store.set_holdout_files(db, held)
    if held or stopped:
        log.info("evaluation.holdout_pages", pages=len(held), jobs_stopped=stopped)
    return len(held)
