"""`python -m ollama_fake`: the stand-in as its own process, until SIGTERM/SIGINT.

Prints `{"url": ..., "control_url": ...}` on one line once listening; the control port keeps
answering `/_fake/knobs`, `/_fake/outage`, `/_fake/stats` during an outage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from ollama_fake.server import DEFAULT_MODELS, FakeOllama


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m ollama_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--call-log", default=None)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeOllama(
            slots=args.slots,
            latency_s=args.latency_s,
            seed=args.seed,
            models=args.model or DEFAULT_MODELS,
            call_log=args.call_log,
            host=args.host,
            port=args.port,
        )
        await fake.astart(control_port=args.control_port)
        print(json.dumps({"url": fake.url, "control_url": fake.control_url}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await fake.aclose()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
