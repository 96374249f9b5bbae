"""Typed errors of a model-server call: what the job queue does next depends only on the class."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "FinalError",
    "GeneratorError",
    "GeneratorUnavailable",
    "ModelMissingError",
    "OutageError",
    "RetryableError",
    "TruncatedError",
    "WrongServerError",
]


class GeneratorError(Exception):
    """Base class; `reason` is short and machine-readable (stored in job_events.reason)."""

    reason = "generator_error"
    trips_breaker = False

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class OutageError(GeneratorError):
    """Connection refused/reset, or 503 queue full: spends no attempt, counts toward the breaker."""

    reason = "unreachable"
    trips_breaker = True


class RetryableError(GeneratorError):
    """500, an error line mid-stream, a read timeout, a garbled body: spends an attempt."""

    reason = "http_500"
    trips_breaker = True


class TruncatedError(RetryableError):
    """`done_reason: length` / `finish_reason: length`: the JSON was cut off."""

    reason = "truncated"
    trips_breaker = False


class FinalError(GeneratorError):
    """400: the request itself is wrong for this job; retrying cannot help."""

    reason = "http_400"


class ModelMissingError(GeneratorError):
    """404: the model is not on the server; generation stops until it is pulled."""

    reason = "model_missing"


class WrongServerError(ModelMissingError):
    """404 from a server that does not speak the configured API (not Ollama, a wrong path):
    pulling a model cannot help; generation stops as for a missing model."""

    reason = "wrong_server"


class ConfigurationError(GeneratorError):
    """The server says the request itself is wrong, the same for every job (a 4xx other than a
    too-long prompt, a 500 whose body is a request-validation error, an engine that cannot
    start): generation stops with this one message; no job spends an attempt."""

    reason = "request_rejected"


class GeneratorUnavailable(GeneratorError):
    """`run --once` gives up: the generator stayed unreachable."""

    reason = "unreachable"
