"""Logging setup: JSON lines off a terminal, stdlib loggers routed through structlog."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, structlog
from daemon.logsetup import configure_logging
from pipeline.generate.logcontext import job_context
configure_logging()
configure_logging(json=False)  # second call is a no-op
with job_context(7, "ab" * 32, 2):
    structlog.get_logger("pipeline.generate").info("pair_stored", n=1)
logging.getLogger("aiohttp.server").error("stdlib %s", "line")
logging.getLogger("watchfiles.main").info("too chatty, hidden")
structlog.get_logger("x").debug("hidden at info")
"""


def test_json_lines_with_job_context_and_stdlib_routing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    )
    assert result.stdout == ""  # logs never pollute stdout (`--json` output lives there)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["event"] == "pair_stored"
    assert (first["job_id"], first["chunk_hash"], first["attempt"]) == (7, "ab" * 8, 2)
    assert first["level"] == "info"
    assert first["logger"] == "pipeline.generate"
    assert "timestamp" in first
    assert (second["event"], second["level"]) == ("stdlib line", "error")
    assert second["logger"] == "aiohttp.server"
