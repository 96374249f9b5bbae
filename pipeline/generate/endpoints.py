"""Generator endpoints: each with its own client, concurrency bound and circuit breaker."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pipeline.clients.http import GeneratorClient
from pipeline.clients.ollama import OllamaClient
from pipeline.clients.openai_compat import OpenAIClient
from pipeline.settings import EndpointSettings, GeneratorSettings

__all__ = ["Breaker", "Endpoint", "build_endpoints", "embedded_endpoint", "endpoint_specs"]


@dataclass
class Breaker:
    """Opens after `threshold` consecutive connection errors / 5xx; closed again by a probe."""

    threshold: int
    consecutive_failures: int = 0
    opened_at: float | None = None
    last_error: str = ""

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, error: str) -> bool:
        """Count a failure; True when this one opened the breaker."""
        self.consecutive_failures += 1
        self.last_error = error
        if self.opened_at is None and self.consecutive_failures >= self.threshold:
            self.opened_at = time.monotonic()
            return True
        return False

    def trip(self, error: str) -> None:
        """Open at once (the server could not be reached at start)."""
        self.last_error = error
        if self.opened_at is None:
            self.opened_at = time.monotonic()

    def close(self) -> None:
        self.opened_at = None
        self.consecutive_failures = 0


@dataclass
class Endpoint:
    """One server: how many requests may be in flight to it, and whether it is usable."""

    url: str
    concurrency: int
    client: GeneratorClient
    breaker: Breaker
    in_flight: int = 0
    probing: bool = False
    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return 0 if self.breaker.is_open else max(0, self.concurrency - self.in_flight)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "concurrency": self.concurrency,
            "in_flight": self.in_flight,
            "calls": self.calls,
            "breaker": "open" if self.breaker.is_open else "closed",
            "consecutive_failures": self.breaker.consecutive_failures,
            "last_error": self.breaker.last_error or None,
            "failures": dict(self.failures),
        }


def endpoint_specs(gen: GeneratorSettings) -> list[EndpointSettings]:
    """`[[generator.endpoints]]` when given, else the single `url` with `concurrency`."""
    return list(gen.endpoints) or [EndpointSettings(url=gen.url, concurrency=gen.concurrency)]


def build_endpoints(session: aiohttp.ClientSession, gen: GeneratorSettings) -> list[Endpoint]:
    """Clients for every endpoint, sharing the one session."""
    endpoints = []
    for spec in endpoint_specs(gen):
        client: GeneratorClient
        if gen.backend == "openai":
            client = OpenAIClient(session, spec.url, gen)
        else:
            client = OllamaClient(session, spec.url, gen)
        endpoints.append(
            Endpoint(spec.url, spec.concurrency, client, Breaker(gen.breaker_threshold))
        )
    return endpoints


def embedded_endpoint(
    session: aiohttp.ClientSession, gen: GeneratorSettings, url: str, concurrency: int
) -> Endpoint:
    """The embedded llama.cpp engine (llama-cpp-python's server): it takes `json_object` with a
    schema, never `json_schema`, so start there instead of spending a refused call."""
    client = OpenAIClient(session, url, gen, format_mode="json_object")
    return Endpoint(url, concurrency, client, Breaker(gen.breaker_threshold))
