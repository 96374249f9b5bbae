"""Shipping commands: `gguf` (export), `register`, `rollback`, `registrations` (list)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from daemon.context import AppContext, echo_json_lines, run_with_db

__all__ = ["COMMANDS"]


@click.command("gguf")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--type",
    "out_type",
    type=click.Choice(["f16", "bf16", "q8_0"]),
    default="f16",
    show_default=True,
    help="Tensor type for 2-D weights (norms and 1-D tensors stay F32).",
)
def gguf_command(model_dir: Path, out_path: Path, out_type: str) -> None:
    """Export a merged Llama-family HF model directory to one GGUF file."""
    from pipeline.ship.gguf_export import export_gguf
    from pipeline.ship.gguf_vocab import VocabError
    from pipeline.ship.safetensors_io import SafetensorsError

    started = time.monotonic()
    try:
        path = export_gguf(model_dir, out_path, out_type)  # type: ignore[arg-type]
    except (ValueError, SafetensorsError, VocabError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    size_mb = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({out_type}, {size_mb:.1f} MB) in {time.monotonic() - started:.1f}s")


def _describe(reg: Any) -> str:
    return f"{reg.alias} -> {reg.model_tag} (run {reg.run_id}, {reg.backend}, {reg.mode})"


@click.command("register")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Skip the evaluation gate.")
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
@click.pass_obj
def register_command(app: AppContext, run_id: str, force: bool, as_json: bool) -> None:
    """Gate, create <name>:RUN (Ollama or embedded), smoke-test it, point <name>:latest at it."""
    from pipeline.ship.register import GateRejected, RegistrationError, register_run

    def status(line: str) -> None:
        if not as_json:
            click.echo(f"  registry: {line}", err=True)

    try:
        reg = run_with_db(
            app.settings,
            lambda db: register_run(db, app.settings, run_id, force=force, on_status=status),
        )
    except GateRejected as exc:
        raise click.ClickException(f"run {run_id} not registered: {exc}") from exc
    except RegistrationError as exc:
        raise click.ClickException(
            f"registration of {run_id} failed (alias unchanged): {exc}"
        ) from exc
    if as_json:
        echo_json_lines([reg.as_dict()])
    else:
        click.echo(f"registered {_describe(reg)}")


@click.command("rollback")
@click.option("--json", "as_json", is_flag=True, help="Print the restored registration as JSON.")
@click.pass_obj
def rollback_command(app: AppContext, as_json: bool) -> None:
    """Point <name>:latest back at the previous kept version."""
    from pipeline.clients.ollama import OllamaError
    from pipeline.ship.register import RegistrationError, rollback

    try:
        reg = run_with_db(app.settings, lambda db: rollback(db, app.settings))
    except (RegistrationError, OllamaError) as exc:
        raise click.ClickException(f"rollback failed (alias unchanged): {exc}") from exc
    if as_json:
        echo_json_lines([reg.as_dict()])
    else:
        click.echo(f"rolled back: {_describe(reg)}")


@click.command("registrations")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def registrations_command(app: AppContext, as_json: bool) -> None:
    """List registered model versions, Ollama or embedded (oldest first)."""
    from state.registrations import list_registrations

    regs = run_with_db(app.settings, list_registrations)
    if as_json:
        echo_json_lines(r.as_dict() for r in regs)
        return
    for r in regs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated_at))
        error = f"  {json.dumps(r.error)}" if r.error else ""
        click.echo(
            f"{r.id:>4}  {r.state:<10} {r.model_tag:<40} {r.backend:<8} {r.mode:<11} {when}{error}"
        )


COMMANDS: list[click.Command] = [
    gguf_command,
    register_command,
    rollback_command,
    registrations_command,
]
