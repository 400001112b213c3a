"""Specs and presets: `dlbox presets`, `dlbox init`. Files on this machine only; no backend."""

from __future__ import annotations

from pathlib import Path

import click

from dlbox.cli.output import emit, json_option
from dlbox.errors import UsageError


@click.command()
@json_option
def presets(as_json: bool) -> None:
    """List the built-in specs that `init --preset` and `build --preset` accept."""
    from dlbox.spec import presets as p

    rows = [{"name": name, "summary": p.summary(name)} for name in p.names()]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<22} {row['summary']}")


@click.command()
@click.option("--preset", required=True, metavar="NAME", help="Preset to start from (see `dlbox presets`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("dlbox.yaml"),
              show_default=True, help="Where to write the spec.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
def init(preset: str, output: Path, force: bool, as_json: bool) -> None:
    """Write a spec file from a preset, to edit and build."""
    from dlbox.spec import presets as p

    text = p.text(preset)
    if output.exists() and not force:
        raise UsageError(f"--output: {output} already exists (use --force to overwrite)")
    output.write_text(text)
    if as_json:
        emit({"spec": str(output), "preset": preset})
    else:
        click.echo(f"wrote {output} from preset {preset}; build it with `dlbox build {output}`")
