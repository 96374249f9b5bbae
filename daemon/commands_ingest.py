"""CLI commands for ingestion: scan, chunks, status."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
