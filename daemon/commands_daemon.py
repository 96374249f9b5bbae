"""CLI commands that talk to the running daemon: retrain."""

from __future__ import annotations

import os
import signal

import click

from daemon.cli import AppContext
from daemon.pidfile import pidfile_path, read_running_pid

__all__ = ["COMMANDS"]


@click.command("retrain")
@click.pass_obj
def retrain_command(app: AppContext) -> None:
    """Ask the running daemon to retrain now (sends it SIGUSR1 via its pidfile)."""
    path = pidfile_path(app.settings)
    pid = read_running_pid(path)
    if pid is None:
        raise click.ClickException(
            f"no running doctune daemon found (pidfile {path} is missing or stale); "
            "start it with `doctune run`, or run `doctune train` for a one-off run"
        )
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise click.ClickException(f"daemon pid {pid} from {path} has exited") from None
    except PermissionError:
        raise click.ClickException(
            f"not allowed to signal daemon pid {pid} (run as the service user, or use "
            "`systemctl kill -s SIGUSR1 doctune`)"
        ) from None
    click.echo(
        f"sent SIGUSR1 to the doctune daemon (pid {pid}): a retrain starts shortly, or right "
        "after the one in progress; follow it with `doctune status` or the daemon's log"
    )


COMMANDS: list[click.Command] = [retrain_command]
