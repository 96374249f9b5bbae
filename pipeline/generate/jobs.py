"""Queue maintenance from the pipeline's side: jobs for the planned chunks of the current prompt."""

from __future__ import annotations

import dataclasses

from pipeline.generate.backend import resolve_backend
from pipeline.generate.plan import plan_generation
from pipeline.settings import GeneratorSettings
from state.db import Database

__all__ = ["ensure_jobs"]


async def ensure_jobs(db: Database, gen: GeneratorSettings) -> int:
    """Create the missing jobs (planned chunk × current prompt version × model); returns how many.

    An unchanged chunk keeps its job whatever file or strategy it moves to, so it is never
    sent to the LLM twice (DESIGN invariant 1), and text that several strategies share is
    asked about once, in the chunk the plan picks (invariant 7, `pipeline.generate.plan`).
    The model is the resolved backend's (`auto` asks once per process; the embedded engine is
    named by its GGUF).
    """
    model = (await resolve_backend(gen)).gen.model
    counts = await plan_generation(db, dataclasses.replace(gen, model=model))
    return counts.jobs_created
