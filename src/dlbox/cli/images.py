"""Images: build, list, inspect, verify, remove."""

from __future__ import annotations

from pathlib import Path

import click

from dlbox.cli.output import answers, emit, json_option, page_options, table


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


IMAGES_TABLE = table(f"{'REF':<40} {'ID':<19} {'LOCK':<12} {'SIZE':>9}  CREATED",
                     lambda r: f"{r['ref']:<40} {r['id'][:19]:<19} {(r['lock_hash'] or '')[:12]:<12} "
                               f"{megabytes(r['size']):>9}  {r['created']}",
                     empty="no dlbox images yet; build one with `dlbox build --preset tensorflow-2.9`")


@click.group(name="images", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include untagged images that a newer build replaced.")
@page_options()
@json_option
@click.pass_context
def images_cmd(ctx, show_all: bool, limit: int, offset: int, as_json: bool) -> None:
    """List the images dlbox has built, newest first (`dlbox images prune` removes old ones)."""
    if ctx.invoked_subcommand is not None:
        return
    from dlbox.cli.backend import backend

    rows = backend().images(show_all=show_all, limit=limit, offset=offset)
    if as_json:
        emit(rows)
    else:
        IMAGES_TABLE(rows, limit=limit, offset=offset)


def _pruned(row: dict) -> str:
    """An engine image's ref and ID; a registry manifest's repository, tags and digest."""
    if row.get("digest"):
        return f"{row['ref'].rpartition('@')[0]}:{','.join(row['tags']) or '(untagged)'}  {row['digest'][:19]}"
    return f"{row['ref']}  {row['id'][:19]}"


def prune_text(result: dict, **_params) -> None:
    verb = "would remove" if result["dry_run"] else "removed"
    for row in result["remove"]:
        if row["errors"]:
            click.echo(f"not removed {_pruned(row)}: {'; '.join(row['errors'])}")
        else:
            click.echo(f"{verb} {_pruned(row)}  ({row['reasons'][0]})")
    for row in result["kept"]:
        click.echo(f"kept {_pruned(row)}: {'; '.join(row['reasons'])}")
    done = sum(1 for r in result["remove"] if r["removed"])
    click.echo(f"{len(result['remove']) if result['dry_run'] else done} {verb}, {len(result['kept'])} kept"
               + (f", {result['failed']} refused" if result["failed"] else ""))


@images_cmd.command(name="prune")
@click.option("--keep", required=True, type=click.IntRange(0, 10_000), metavar="N",
              help="Keep the newest N images of each name (and every image something still uses).")
@click.option("--dry-run", is_flag=True, help="Only list what would go, and why each kept one stays.")
@click.option("--name", metavar="NAME", help="Only the images of this name (a spec's name, e.g. tensorflow-2.9).")
@click.option("--registry", metavar="HOST:PORT[/PROJECT]",
              help="Prune this registry's images (under PROJECT) instead of the engine's; it must allow deletion.")
@answers(prune_text, ok=lambda result: not result["failed"])
def prune(backend, keep: int, dry_run: bool, name: str | None, registry: str | None):
    """Remove old dlbox images: per name all but the newest N, never one that a workspace (in any state),
    a queued or running job, a model version, an unfinished pipeline, a deployment or any container
    needs. Removals are never forced (the engine refuses an image still in use); exit 1 if one was
    refused.

    With --registry the same rules prune a registry: per repository all but the newest N manifests
    (every tag on a manifest goes with it, and its signature), never one that is needed as above or
    whose REPO@sha256:... digest a job, model version or deployment recorded. Finished runs do not
    hold an image: reproducing one whose image was pruned everywhere fails."""
    return backend.prune_images(keep=keep, name=name, dry_run=dry_run, registry=registry)


def megabytes(size: int | None) -> str:
    return f"{(size or 0) / 1e6:.0f} MB"


def image_text(data: dict, **_params) -> None:
    lock = data["lock"]
    for key in ("ref", "id", "lock_hash", "spec_hash", "git_commit", "created"):
        click.echo(f"{key:<11} {data[key]}")
    click.echo(f"{'size':<11} {megabytes(data['size'])}")
    click.echo(f"{'base':<11} {lock['base']['ref']} (rootfs sha256 {lock['base']['rootfs_sha256']})")
    click.echo(f"{'python':<11} {lock['python']['version']}, {len(lock['python']['packages'])} packages")
    click.echo(f"{'os':<11} {len(lock['os']['packages'])} packages")
    scan = data.get("scan")
    if scan:
        counts = ", ".join(f"{n} {level}" for level, n in scan["counts"].items() if n) or "none"
        os_line = scan["os_error"] or f"{scan['os_updates']} OS packages with a security update"
        click.echo(f"{'scan':<11} {scan['scanned_at']}: {scan['findings']} advisories ({counts}); {os_line}")
        click.echo(f"{'':<11} advisories from {scan['advisories']}")
        gate = scan.get("gate") or {}
        if gate.get("fail_on"):
            click.echo(f"{'':<11} fail-on {gate['fail_on']}: {'failed' if gate['failed'] else 'passed'} "
                       f"({gate['at_or_above']} at or above)")
    else:
        click.echo(f"{'scan':<11} not scanned yet (dlbox scan {data['ref']})")
    for pkg in lock["python"]["packages"]:
        click.echo(f"  {pkg['name']}=={pkg['version']}")


@click.command()
@click.argument("image")
@answers(image_text)
def inspect(backend, image: str):
    """Show one image with its lock (IMAGE: a ref such as dlbox/NAME:latest, or an ID)."""
    return backend.inspect(image)


def drift_text(result: dict, image: str | None, workspace: str | None) -> None:
    if workspace is not None:
        return workspace_drift_text(result)
    if result["ok"]:
        click.echo(f"{image}: matches its lock {result['lock_hash'][:12]}")
        return
    click.echo(f"{image}: {len(result['drift'])} packages differ from its lock {result['lock_hash'][:12]}")
    for d in result["drift"]:
        click.echo(f"  {d['kind']:<6} {d['name']}: locked {d['locked'] or '-'}, found {d['found'] or '-'}")


def workspace_drift_text(result: dict) -> None:
    name, packages = result["workspace"], result["packages"]
    if result["ok"]:
        click.echo(f"{name}: no packages installed beyond its image {result['image']}")
        return
    click.echo(f"{name}: {len(packages)} packages installed beyond its image {result['image']} (in {result['dir']})")
    for p in packages:
        click.echo(f"  {p['name']}=={p['version']}" + (f" (image has {p['locked']})" if p["locked"] else ""))


@click.command()
@click.argument("image", required=False)
@click.option("--workspace", "workspace", metavar="NAME", help="Check a running workspace instead: the packages "
              "its user installed (into HOME) beyond its image's lock.")
@answers(drift_text, ok=lambda result: result["ok"])
def verify(backend, image: str | None, workspace: str | None):
    """Compare the packages actually in IMAGE with its lock; exit 1 on drift."""
    if (image is None) == (workspace is None):
        raise click.UsageError("give IMAGE or --workspace NAME (one of them)")
    return backend.verify_workspace(workspace) if workspace is not None else backend.verify(image)


@click.command()
@click.argument("image")
@click.option("--force", is_flag=True, help="Remove even if a container uses it.")
@answers(lambda result, image, force: f"removed {image}")
def rmi(backend, image: str, force: bool):
    """Remove a dlbox image (one tag; the layers go when no tag is left)."""
    return backend.rmi(image, force=force)
