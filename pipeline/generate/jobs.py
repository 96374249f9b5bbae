"""Queue maintenance from the pipeline's side: one job per live chunk for the current prompt."""

from __future__ import annotations

from pipeline.generate.backend import resolve_backend
from pipeline.generate.prompt import prompt_version_for
from pipeline.settings import GeneratorSettings
from state import jobs as state_jobs
from state.db import Database

__all__ = ["ensure_jobs"]


async def ensure_jobs(db: Database, gen: GeneratorSettings) -> int:
    """Create the missing jobs (live chunk × current prompt version × model); returns how many.

    An unchanged chunk keeps its job whatever file or strategy it moves to, so it is never
    sent to the LLM twice (DESIGN invariant 1). The model is the resolved backend's (`auto`
    asks once per process; the embedded engine is named by its GGUF).
    """
    model = (await resolve_backend(gen)).gen.model
    return await state_jobs.ensure_jobs(db, prompt_version=prompt_version_for(gen), model=model)
