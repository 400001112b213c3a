"""The `dlbox` command line. Thin: parse flags, call a module, print text or JSON.

Heavy modules (the Docker SDK, pydantic models, Rich) are imported inside commands so that
`dlbox --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dlbox import __version__
from dlbox.errors import DlboxError, UsageError

JSON_HELP = "Print a JSON document for scripts instead of text."


def emit(data) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="dlbox")
def cli() -> None:
    """dlbox: deep-learning environments as versioned, reproducible artifacts.

    A spec (dlbox.yaml) describes an environment; `dlbox build` turns it into an image
    whose exact package set is written to a lock (dlbox.lock) and stamped on the image.

    \b
    Start here:
      dlbox init --preset tensorflow-2.9     write a dlbox.yaml
      dlbox build                            build it (bootstraps a base the first time)
      dlbox images                           what has been built
      dlbox verify dlbox/tensorflow-2.9      does the image still match its lock?

    The engine is the Docker Engine at DOCKER_HOST (default unix:///var/run/docker.sock).
    """


# --- specs and presets --------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def presets(as_json: bool) -> None:
    """List the built-in specs that `init --preset` and `build --preset` accept."""
    from dlbox import presets as p

    rows = [{"name": name, "summary": p.summary(name)} for name in p.names()]
    if as_json:
        emit(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<22} {row['summary']}")


@cli.command()
@click.option("--preset", required=True, metavar="NAME", help="Preset to start from (see `dlbox presets`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("dlbox.yaml"),
              show_default=True, help="Where to write the spec.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def init(preset: str, output: Path, force: bool, as_json: bool) -> None:
    """Write a spec file from a preset, to edit and build."""
    from dlbox import presets as p

    text = p.text(preset)
    if output.exists() and not force:
        raise UsageError(f"--output: {output} already exists (use --force to overwrite)")
    output.write_text(text)
    if as_json:
        emit({"spec": str(output), "preset": preset})
    else:
        click.echo(f"wrote {output} from preset {preset}; build it with `dlbox build {output}`")


def load_spec(spec_file: Path | None, preset: str | None):
    """(spec, project directory, lock file) from a SPEC argument, --preset, or ./dlbox.yaml."""
    from dlbox import config, presets as p, spec as specs

    if spec_file and preset:
        raise UsageError("give either a SPEC file or --preset, not both")
    if preset:
        spec = specs.parse(p.text(preset), source=f"preset {preset}")
        lock_dir = config.home() / "presets"
        return spec, Path.cwd(), lock_dir / f"{preset}.lock"
    if spec_file is None:
        spec_file = Path("dlbox.yaml")
        if not spec_file.exists():
            raise UsageError("no SPEC given and no dlbox.yaml here; give a SPEC file or --preset NAME "
                             "(`dlbox init --preset NAME` writes one)")
    spec = specs.load(spec_file)
    spec_file = spec_file.resolve()
    return spec, spec_file.parent, spec_file.with_suffix(".lock")


# --- images -------------------------------------------------------------------------------


@cli.command()
@click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", metavar="NAME", help="Build a built-in spec instead of a file.")
@click.option("--dry-run", is_flag=True, help="Print the rendered Dockerfile and stop; needs no engine.")
@click.option("--update-lock", is_flag=True, help="Resolve the spec's requirements again instead of using the lock.")
@click.option("--no-cache", is_flag=True, help="Do not use the engine's layer cache.")
@click.option("--ca-bundle", metavar="PATH|none",
              help="CA bundle the build trusts (default: $DLBOX_CA_BUNDLE or the host's); 'none' for no extra CA.")
@click.option("--tag", default="latest", show_default=True, help="Friendly tag, besides the content tag.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def build(spec_file, preset, dry_run, update_lock, no_cache, ca_bundle, tag, as_json) -> None:
    """Build an image from SPEC (default ./dlbox.yaml) or a --preset.

    The first build of a Debian base bootstraps it from the mirror (cached afterwards).
    If a lock next to the spec (dlbox.yaml -> dlbox.lock) matches the spec, the build
    installs exactly the locked packages and fails if the result differs; otherwise the
    requirements are resolved and a new lock is written. The image is tagged
    dlbox/NAME:<lock hash prefix> and dlbox/NAME:<tag>.
    """
    import re

    from dlbox import bases, config, render
    from dlbox import lock as locks

    spec, project_dir, lock_file = load_spec(spec_file, preset)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"--tag: {tag!r} is not a valid tag (letters, digits, '_', '.', '-')")
    if ca_bundle == "none":
        ca_path = None
    elif ca_bundle:
        ca_path = Path(ca_bundle)
        if not ca_path.is_file():
            raise UsageError(f"--ca-bundle: no file at {ca_bundle} (or 'none')")
    else:
        ca_path = config.default_ca_bundle()
    if dry_run:
        pinned = None
        if lock_file.exists() and not update_lock:
            candidate = locks.read(lock_file)
            pinned = candidate if candidate.spec_hash == spec.environment_hash() else None
        click.echo(render.render(spec, bases.ref(spec.base), lock=pinned, ca_bundle=ca_path is not None).dockerfile,
                   nl=False)
        return
    from dlbox import engine, images
    from dlbox.progress import Progress

    engine.client()  # fail fast, before any work, when no engine answers
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        result = images.build(spec, project_dir=project_dir, lock_file=lock_file, use_lock=not update_lock,
                              nocache=no_cache, ca_bundle=ca_path, tag=tag, progress=progress)
    if as_json:
        emit(result.to_json())
    else:
        click.echo(f"{result.image}  {result.id}\nlock {result.lock.hash}  {result.lock_file}")


@cli.command(name="images")
@click.option("--all", "show_all", is_flag=True, help="Include untagged images that a newer build replaced.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def images_cmd(show_all: bool, as_json: bool) -> None:
    """List the images dlbox has built, newest first."""
    from dlbox import images

    rows = images.list_images(include_untagged=show_all)
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("no dlbox images yet; build one with `dlbox build --preset tensorflow-2.9`")
        return
    click.echo(f"{'REF':<40} {'ID':<19} {'LOCK':<12} {'SIZE':>9}  CREATED")
    for r in rows:
        size = f"{(r['size'] or 0) / 1e6:.0f} MB"
        click.echo(f"{r['ref']:<40} {r['id'][:19]:<19} {(r['lock_hash'] or '')[:12]:<12} {size:>9}  {r['created']}")


@cli.command()
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def inspect(image: str, as_json: bool) -> None:
    """Show one image with its lock (IMAGE: a ref such as dlbox/NAME:latest, or an ID)."""
    from dlbox import images

    data = images.inspect(image)
    if as_json:
        emit(data)
        return
    lock = data["lock"]
    for key in ("ref", "id", "lock_hash", "spec_hash", "git_commit", "created"):
        click.echo(f"{key:<11} {data[key]}")
    click.echo(f"{'size':<11} {(data['size'] or 0) / 1e6:.0f} MB")
    click.echo(f"{'base':<11} {lock['base']['ref']} (rootfs sha256 {lock['base']['rootfs_sha256']})")
    click.echo(f"{'python':<11} {lock['python']['version']}, {len(lock['python']['packages'])} packages")
    click.echo(f"{'os':<11} {len(lock['os']['packages'])} packages")
    for pkg in lock["python"]["packages"]:
        click.echo(f"  {pkg['name']}=={pkg['version']}")


@cli.command()
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def verify(image: str, as_json: bool) -> None:
    """Compare the packages actually in IMAGE with its lock; exit 1 on drift."""
    from dlbox import images

    result = images.verify(image)
    if as_json:
        emit(result)
    elif result["ok"]:
        click.echo(f"{image}: matches its lock {result['lock_hash'][:12]}")
    else:
        click.echo(f"{image}: {len(result['drift'])} packages differ from its lock {result['lock_hash'][:12]}")
        for d in result["drift"]:
            click.echo(f"  {d['kind']:<6} {d['name']}: locked {d['locked'] or '-'}, found {d['found'] or '-'}")
    if not result["ok"]:
        sys.exit(1)


@cli.command()
@click.argument("image")
@click.option("--force", is_flag=True, help="Remove even if a container uses it.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def rmi(image: str, force: bool, as_json: bool) -> None:
    """Remove a dlbox image (one tag; the layers go when no tag is left)."""
    from dlbox import engine, images

    attrs = images.get(image)
    engine.remove_image(image, force=force)
    if as_json:
        emit({"removed": image, "id": attrs["Id"]})
    else:
        click.echo(f"removed {image}")


# --- entry point --------------------------------------------------------------------------


def fail(message: str, exit_code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(exit_code)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("interrupted", 130)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        fail(exc.format_message() + where, 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except DlboxError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
