"""Images: build, list, inspect, verify, remove."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlbox.cli.output import emit, json_option


@click.command()
@click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", metavar="NAME", help="Build a built-in spec instead of a file.")
@click.option("--dry-run", is_flag=True, help="Print the rendered Dockerfile and stop; needs no engine.")
@click.option("--update-lock", is_flag=True, help="Resolve the spec's requirements again instead of using the lock.")
@click.option("--no-cache", is_flag=True, help="Do not use the engine's layer cache.")
@click.option("--ca-bundle", metavar="PATH|none",
              help="CA bundle the build trusts (default: $DLBOX_CA_BUNDLE or the host's); 'none' for no extra CA.")
@click.option("--tag", default="latest", show_default=True, help="Friendly tag, besides the content tag.")
@json_option
def build(spec_file, preset, dry_run, update_lock, no_cache, ca_bundle, tag, as_json) -> None:
    """Build an image from SPEC (default ./dlbox.yaml) or a --preset.

    The first build of a Debian base bootstraps it from the mirror (cached afterwards).
    If a lock next to the spec (dlbox.yaml -> dlbox.lock) matches the spec, the build
    installs exactly the locked packages and fails if the result differs; otherwise the
    requirements are resolved and a new lock is written. The image is tagged
    dlbox/NAME:<lock hash prefix> and dlbox/NAME:<tag>.
    """
    if dry_run:  # rendering needs no engine and no server: always here
        click.echo(dockerfile(spec_file, preset, update_lock=update_lock, ca_bundle=ca_bundle, tag=tag), nl=False)
        return
    from dlbox.cli.backend import backend

    where = backend()
    result = where.build(spec_file, preset, update_lock=update_lock, no_cache=no_cache, ca_bundle=ca_bundle,
                         tag=tag)
    if as_json:
        emit(result)
    elif where.remote:  # the lock file is on the server
        click.echo(f"{result['image']}  {result['id']}")
    else:
        click.echo(f"{result['image']}  {result['id']}\nlock {result['lock_hash']}  {result['lock_file']}")


def dockerfile(spec_file: Path | None, preset: str | None, *, update_lock: bool, ca_bundle: str | None,
               tag: str) -> str:
    """The Dockerfile `build` would use (the lock's pins when it matches the spec)."""
    from dlbox.build import bases
    from dlbox.build import lock as locks
    from dlbox.build import render
    from dlbox.cli.backend import build_inputs

    spec, _, lock_file, ca_path = build_inputs(spec_file, preset, tag, ca_bundle)
    pinned = None
    if lock_file.exists() and not update_lock:
        candidate = locks.read(lock_file)
        pinned = candidate if candidate.spec_hash == spec.environment_hash() else None
    return render.render(spec, bases.ref(spec.base), lock=pinned, ca_bundle=ca_path is not None).dockerfile


@click.command(name="images")
@click.option("--all", "show_all", is_flag=True, help="Include untagged images that a newer build replaced.")
@json_option
def images_cmd(show_all: bool, as_json: bool) -> None:
    """List the images dlbox has built, newest first."""
    from dlbox.cli.backend import backend

    rows = backend().images(show_all=show_all)
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


@click.command()
@click.argument("image")
@json_option
def inspect(image: str, as_json: bool) -> None:
    """Show one image with its lock (IMAGE: a ref such as dlbox/NAME:latest, or an ID)."""
    from dlbox.cli.backend import backend

    data = backend().inspect(image)
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
    scan = data.get("scan")
    if scan:
        counts = ", ".join(f"{n} {level}" for level, n in scan["counts"].items() if n) or "none"
        os_line = scan["os_error"] or f"{scan['os_updates']} OS packages with a security update"
        click.echo(f"{'scan':<11} {scan['scanned_at']}: {scan['findings']} advisories ({counts}); {os_line}")
        click.echo(f"{'':<11} advisories from {scan['advisories']}")
    else:
        click.echo(f"{'scan':<11} not scanned yet (dlbox scan {data['ref']})")
    for pkg in lock["python"]["packages"]:
        click.echo(f"  {pkg['name']}=={pkg['version']}")


@click.command()
@click.argument("image")
@json_option
def verify(image: str, as_json: bool) -> None:
    """Compare the packages actually in IMAGE with its lock; exit 1 on drift."""
    from dlbox.cli.backend import backend

    result = backend().verify(image)
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


@click.command()
@click.argument("image")
@click.option("--force", is_flag=True, help="Remove even if a container uses it.")
@json_option
def rmi(image: str, force: bool, as_json: bool) -> None:
    """Remove a dlbox image (one tag; the layers go when no tag is left)."""
    from dlbox.cli.backend import backend

    result = backend().rmi(image, force=force)
    if as_json:
        emit(result)
    else:
        click.echo(f"removed {image}")
