"""Logging configured once: structlog for our events, stdlib loggers routed through it."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging"]

_configured = False
# Third-party loggers that are chatty at INFO; they still show warnings and errors.
_QUIET_LOGGERS = {
    "watchfiles.main": logging.WARNING,
    "aiohttp.access": logging.WARNING,
    "aiosqlite": logging.INFO,  # logs every statement at DEBUG
}


def configure_logging(
    json: bool | None = None, level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger (first call wins; later calls are no-ops).

    `json=None` picks JSON lines when the log stream is not a terminal (journald, files,
    pipes) and a coloured console renderer on a terminal. Logs go to stderr so that
    `--json` command output on stdout stays machine-readable.
    """
    global _configured
    if _configured:
        return
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not _isatty(out)
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor
    if json:
        renderer = structlog.processors.JSONRenderer(default=str)
        final: list[structlog.types.Processor] = [
            structlog.processors.format_exc_info,  # one string field: journald-friendly
            renderer,
        ]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=_isatty(out))]

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler: logging.Handler = (
        logging.StreamHandler(out) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name, quiet_level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet_level, numeric_level))
    logging.captureWarnings(True)
    _configured = True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (test runners swap it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
