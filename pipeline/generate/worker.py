"""One job's fate: build the prompt, and turn a reply or an error into a JobOutcome."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from pipeline.clients.errors import (
    ConfigurationError,
    FinalError,
    GeneratorError,
    ModelMissingError,
    OutageError,
    TruncatedError,
)
from pipeline.clients.http import Completion
from pipeline.generate import backtranslate
from pipeline.generate.prompt import build_messages, response_schema
from pipeline.generate.validate import (
    REJECTION_FEEDBACK,
    DuplicateIndex,
    Rejection,
    validate_reply,
)
from pipeline.settings import GeneratorSettings
from state.db import now
from state.job_claims import ClaimedJob
from state.job_outcomes import JobOutcome, OutcomeKind
from state.pairs import NewPair

__all__ = [
    "JobRequest",
    "backoff_s",
    "chunk_preview",
    "messages_for",
    "outcome_for_error",
    "outcome_for_no_span",
    "outcome_for_reply",
    "request_for",
]

PREVIEW_CHARS = 200


@dataclass(frozen=True)
class JobRequest:
    """What one job sends: the messages, the reply schema, and (backtranslate) the answers."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]
    passages: list[backtranslate.Passage] | None = None  # the answers; None in `qa` mode


def _failed_again(job: ClaimedJob, reason: str) -> bool:
    """A repair was rejected for the reason its feedback named: the model did not take it.

    Measured with the embedded SmolLM2 (bench/RESULTS.md, "One repair per reason"): a first
    repair saves about half the rejected jobs, a second one for the same reason 1 in 18, so
    each reason gets one repair; a reply that fails for a new reason still gets its own.
    """
    return job.repairs > 0 and (job.last_error or "").split(":", 1)[0] == reason


def _feedback(job: ClaimedJob) -> str | None:
    code = (job.last_error or "").split(":", 1)[0]
    return REJECTION_FEEDBACK.get(code) if job.repairs > 0 else None


def messages_for(job: ClaimedJob, gen: GeneratorSettings) -> list[dict[str, str]]:
    """The `qa` prompt; after a rejection it says what was wrong (a repair retry)."""
    return build_messages(job, gen.pairs_per_chunk, feedback=_feedback(job))


def request_for(job: ClaimedJob, gen: GeneratorSettings) -> JobRequest:
    """The request for one job in the configured mode (`passages == []`: nothing to ask)."""
    if gen.mode == "backtranslate":
        passages = backtranslate.answer_passages(job, gen.pairs_per_chunk, gen)
        return JobRequest(
            backtranslate.build_messages(job, passages, feedback=_feedback(job)),
            backtranslate.question_schema(gen, max(1, len(passages))),
            passages,
        )
    return JobRequest(messages_for(job, gen), response_schema(gen))


def outcome_for_no_span(job: ClaimedJob) -> JobOutcome:
    """Backtranslate found no paragraph fit to be an answer: dead without a call, recorded."""
    return _outcome(
        job, "dead", "rejected", "no_answer_span", "no paragraph fits the answer bounds"
    )


def backoff_s(attempts: int, gen: GeneratorSettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: base·2^(n-1), capped, times a uniform [0.5, 1)."""
    raw = min(gen.backoff_max_s, gen.backoff_base_s * 2.0 ** max(0, attempts - 1))
    jitter: float = (rng or random).uniform(0.5, 1.0)
    return raw * jitter


def chunk_preview(text: str) -> str:
    """The first ~200 characters of a chunk on one line."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def _outcome(
    job: ClaimedJob,
    kind: OutcomeKind,
    event_kind: str,
    reason: str,
    detail: str,
    next_attempt_at: float = 0.0,
) -> JobOutcome:
    return JobOutcome(job.id, job.claim_token, kind, event_kind, reason, detail, next_attempt_at)


def outcome_for_error(job: ClaimedJob, exc: GeneratorError, gen: GeneratorSettings) -> JobOutcome:
    """Outages, a missing model and a refused request give the job back untouched (no attempt
    spent); a too-long prompt is final; the rest retry."""
    if isinstance(exc, OutageError):
        return _outcome(job, "release", "outage", exc.reason, exc.detail, now())
    if isinstance(exc, ModelMissingError | ConfigurationError):
        return _outcome(job, "release", "error", exc.reason, exc.detail, now())
    if isinstance(exc, FinalError):
        return _outcome(job, "dead", "error", exc.reason, exc.detail)
    if isinstance(exc, TruncatedError):
        return _outcome_for_truncation(job, exc, gen)
    attempts = job.attempts + 1
    if attempts >= gen.max_attempts:
        return _outcome(job, "dead", "error", f"max_attempts:{exc.reason}", exc.detail)
    delay_s = backoff_s(attempts, gen)
    return _outcome(job, "retry", "error", exc.reason, exc.detail, now() + delay_s)


def _outcome_for_truncation(
    job: ClaimedJob, exc: TruncatedError, gen: GeneratorSettings
) -> JobOutcome:
    """A reply cut off at the token limit is asked again as a repair, with feedback, not retried.

    The same request with the same temperature and seed is the same reply (llama.cpp and Ollama
    seed each request): measured with the embedded SmolLM2 on `scalar_functions.md`, two jobs
    ran out of tokens on all 5 attempts. A repair changes the prompt; cut off again, the job is
    dead, like a rejection its repair did not fix.
    """
    return _repair_or_dead(job, gen, "truncated", exc.reason, exc.detail)


def _repair_or_dead(
    job: ClaimedJob, gen: GeneratorSettings, event_kind: str, reason: str, detail: str
) -> JobOutcome:
    """An unusable reply: a repair, or dead (`rejected:<reason>`) when the repairs are spent
    or the last repair failed for this same reason."""
    if job.repairs >= gen.max_repairs:
        return _outcome(job, "dead", event_kind, f"rejected:{reason}", detail)
    if _failed_again(job, reason):
        detail = f"{detail} (the repair failed for the same reason: not asked again)"
        return _outcome(job, "dead", event_kind, f"rejected:{reason}", detail)
    return _outcome(job, "repair", event_kind, reason, detail, now())


def outcome_for_reply(
    job: ClaimedJob,
    completion: Completion,
    gen: GeneratorSettings,
    prompt_version: str,
    index: DuplicateIndex,
    passages: list[backtranslate.Passage] | None = None,
) -> tuple[JobOutcome, list[int]]:
    """Validate a reply: `done` with pairs (their questions added to `index`), or a rejection.

    `passages` (backtranslate) are the answers; the reply holds only the questions.
    """
    try:
        if passages is None:
            pairs = validate_reply(completion.content, job.text, job.repo, gen, index)
        else:
            pairs = backtranslate.validate_questions(
                completion.content, passages, job.repo, gen, index
            )
    except Rejection as rej:
        return _repair_or_dead(job, gen, "rejected", rej.reason, rej.detail), []
    handles = [index.add(job.repo, p.question) for p in pairs]
    preview = chunk_preview(job.text)
    new_pairs = [
        NewPair(
            idx=i,
            chunk_id=job.chunk_id,
            repo=job.repo,
            path=job.path,
            git_commit=job.git_commit,
            strategy=job.strategy,
            start_line=job.start_line,
            end_line=job.end_line,
            chunk_preview=preview,
            question=p.question,
            answer=p.answer,
            model=gen.model,
            prompt_version=prompt_version,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_ms=round(completion.latency_ms, 2),
        )
        for i, p in enumerate(pairs)
    ]
    outcome = JobOutcome(job.id, job.claim_token, "done", pairs=tuple(new_pairs))
    return outcome, handles
