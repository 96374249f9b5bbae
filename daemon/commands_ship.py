"""CLI commands for shipping models: gguf (export), register, rollback."""

from __future__ import annotations

import time
from pathlib import Path

import click

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


COMMANDS: list[click.Command] = [gguf_command]
