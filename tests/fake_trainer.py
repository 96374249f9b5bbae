"""A stand-in trainer for daemon tests: `daemon.retrain_entrypoint = "fake_trainer:retrain"`.

Appends one JSON line per call to $FAKE_TRAINER_LOG and reports whether torch is loaded in
the calling process (it must not be: the daemon never imports torch).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import anyio


async def retrain(db: Any, settings: Any, *, trigger: str) -> dict[str, Any]:
    """Record the call, hold for $FAKE_TRAINER_S seconds, return a small outcome."""
    record = {"trigger": trigger, "at": time.time(), "torch_loaded": "torch" in sys.modules}
    log = anyio.Path(os.environ["FAKE_TRAINER_LOG"])
    async with await log.open("a", encoding="utf-8") as f:
        await f.write(json.dumps(record) + "\n")
    await anyio.sleep(float(os.environ.get("FAKE_TRAINER_S", "0.2")))
    return {"state": "succeeded", "trigger": trigger}
