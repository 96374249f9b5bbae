"""`doctune retrain`: signal the running daemon to retrain, and read its acknowledgement."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import click

from daemon.context import AppContext
from daemon.listen import parse_listen
from daemon.pidfile import daemon_pidfile

__all__ = ["COMMANDS"]

ACK_TIMEOUT_S = 5.0


@click.command("retrain")
@click.pass_obj
def retrain_command(app: AppContext) -> None:
    """Ask the running daemon to retrain now (sends it SIGUSR1 via its pidfile)."""
    path, pid = daemon_pidfile(app.settings)
    if pid is None:
        raise click.ClickException(
            f"no running doctune daemon found (pidfile {path} is missing or stale); "
            "start it with `doctune run`, or run `doctune train` for a one-off run"
        )
    listen = app.settings.daemon.status_listen
    host = (app.settings.daemon.allowed_hosts or ["localhost"])[0]
    before = _scheduler_stats(listen, host)
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise click.ClickException(f"daemon pid {pid} from {path} has exited") from None
    except PermissionError:
        raise click.ClickException(
            f"not allowed to signal daemon pid {pid} (run as the service user, or use "
            "`systemctl kill -s SIGUSR1 doctune`)"
        ) from None
    click.echo(f"sent SIGUSR1 to the doctune daemon (pid {pid})")
    click.echo(_acknowledgement(listen, host, before))


def _acknowledgement(listen: str, host: str, before: dict[str, Any] | None) -> str:
    """What the daemon's status endpoint says about the request, if it is reachable."""
    if before is None:
        return "the status endpoint is unreachable; follow the retrain in the daemon's log"
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while time.monotonic() < deadline:
        now = _scheduler_stats(listen, host)
        if now is not None and now.get("requests", 0) > before.get("requests", 0):
            if now.get("running"):
                return (
                    f"a retrain is already running (trigger {now.get('last_trigger')}); "
                    "one more will start when it finishes"
                )
            return "the daemon queued the retrain; it starts in a moment (`doctune runs` lists it)"
        time.sleep(0.1)
    return f"the daemon did not acknowledge within {ACK_TIMEOUT_S:.0f}s; check its log"


def _scheduler_stats(listen: str, host_header: str) -> dict[str, Any] | None:
    """`daemon.scheduler` from GET /status, or None when the endpoint cannot be read."""
    try:
        target = parse_listen(listen)
        conn: http.client.HTTPConnection
        if isinstance(target, Path):
            conn = _UnixHTTPConnection(str(target))
        else:
            host = "127.0.0.1" if target[0] in ("0.0.0.0", "") else target[0]
            host = "::1" if host == "::" else host
            conn = http.client.HTTPConnection(host, target[1], timeout=2)
        conn.request("GET", "/status", headers={"Host": host_header})
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = json.loads(response.read())
        conn.close()
    except (OSError, ValueError, http.client.HTTPException):
        return None
    scheduler = body.get("daemon", {}).get("scheduler")
    return scheduler if isinstance(scheduler, dict) else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the daemon's unix status socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=2)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(self._path)
        self.sock = sock


COMMANDS: list[click.Command] = [retrain_command]
