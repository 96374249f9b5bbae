"""The status endpoint: GET-only aiohttp app on TCP or a unix socket, inside the daemon's loop."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from daemon.listen import parse_listen
from daemon.metrics import CONTENT_TYPE, render_metrics

__all__ = ["StatusServer", "build_app", "parse_listen", "process_stats", "render_metrics"]

log = structlog.get_logger(__name__)

SnapshotFn = Callable[[], Awaitable[dict[str, Any]]]
StatsFn = Callable[[], dict[str, Any]]

_SNAPSHOT_KEY: web.AppKey[SnapshotFn] = web.AppKey("snapshot")
_STATS_KEY: web.AppKey[StatsFn] = web.AppKey("stats")
_HOSTS_KEY: web.AppKey[frozenset[str]] = web.AppKey("allowed_hosts")


def _host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Match the Host header (with or without its port) against the allow-list."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host in allowed:
        return True
    if host.startswith("["):  # [::1]:8377
        bracket = host.find("]")
        return bracket > 0 and host[: bracket + 1] in allowed
    name, sep, port = host.rpartition(":")
    return bool(sep) and port.isdigit() and name in allowed


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # A browser page on another origin can reach 127.0.0.1 (DNS rebinding); its Host header
    # names the attacker's domain, so refusing unknown hosts closes that door.
    if not _host_allowed(request.headers.get("Host"), request.app[_HOSTS_KEY]):
        log.warning("status_forbidden_host", host=request.headers.get("Host"))
        return web.Response(status=403, text="forbidden host\n")
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _healthz(request: web.Request) -> web.Response:
    stats = request.app[_STATS_KEY]()
    return web.json_response({"ok": True, "phase": stats.get("phase", "running")})


async def _status(request: web.Request) -> web.Response:
    body = await _full_status(request.app)
    return web.json_response(body, dumps=_dumps)


async def _metrics(request: web.Request) -> web.Response:
    body = await _full_status(request.app)
    response = web.Response(body=render_metrics(body))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def _full_status(app: web.Application) -> dict[str, Any]:
    try:
        snapshot = await app[_SNAPSHOT_KEY]()
    except Exception as exc:
        log.exception("status_snapshot_failed")
        snapshot = {"snapshot_error": f"{type(exc).__name__}: {exc}"}
    return {**snapshot, "daemon": app[_STATS_KEY]()}


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


def build_app(snapshot: SnapshotFn, stats: StatsFn, allowed_hosts: list[str]) -> web.Application:
    """The aiohttp app: GET /healthz, /status, /metrics; other methods get 405."""
    app = web.Application(middlewares=[_guard])
    app[_SNAPSHOT_KEY] = snapshot
    app[_STATS_KEY] = stats
    app[_HOSTS_KEY] = frozenset(h.lower() for h in allowed_hosts)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    return app


class StatusServer:
    """Starts and stops the status app on the daemon's own event loop (no extra thread)."""

    def __init__(
        self, listen: str, snapshot: SnapshotFn, stats: StatsFn, allowed_hosts: list[str]
    ) -> None:
        self.listen = listen
        self._target = parse_listen(listen)
        self._app = build_app(snapshot, stats, allowed_hosts)
        self._runner: web.AppRunner | None = None
        self.bound: list[str] = []
        self.url = ""  # base URL once started (unix sockets: http://localhost)

    async def start(self) -> None:
        """Bind and start serving; the address actually bound ends up in `self.bound`."""
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site: web.BaseSite
        if isinstance(self._target, Path):
            _remove_stale_socket(self._target)
            self._target.parent.mkdir(parents=True, exist_ok=True)
            site = web.UnixSite(runner, str(self._target))
        else:
            host, port = self._target
            site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if isinstance(self._target, Path):
            os.chmod(self._target, 0o660)
        self._runner = runner
        self.bound = [str(a) for a in runner.addresses]
        if not isinstance(self._target, Path):
            host, port = runner.addresses[0][:2]
            self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        else:
            self.url = "http://localhost"
        log.info("status_server_listening", listen=self.listen, addresses=self.bound)

    async def stop(self) -> None:
        """Stop accepting and close connections (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            if isinstance(self._target, Path):
                _remove_stale_socket(self._target)


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):
        path.unlink()
    else:
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")


def process_stats(started_mono: float) -> dict[str, Any]:
    """pid, uptime, RSS and CPU seconds of this process, plus which heavy modules are loaded."""
    import resource
    import sys

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - started_mono, 3),
        "rss_bytes": _current_rss_bytes(),
        "max_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "heavy_modules_loaded": sorted(
            m
            for m in ("torch", "transformers", "peft", "datasets", "bitsandbytes")
            if m in sys.modules
        ),
    }


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
