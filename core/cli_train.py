"""`ganvas train` and `ganvas eval` (added to the main click group in cli.py)."""
from __future__ import annotations

import click


@click.command("train")
@click.option("--data", required=True, help="'shapes', an imagefolder (metadata.jsonl) or a folder with .txt sidecars")
@click.option("--out", required=True, type=click.Path(), help="run directory")
def train_command(data, out):
    """Train a text-conditional GAN (placeholder until the full options land)."""
    raise click.ClickException("not wired yet")
