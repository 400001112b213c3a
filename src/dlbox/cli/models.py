"""The model registry: models ls/register/show/alias/history/rm/share."""

from __future__ import annotations

import click

from dlbox.cli.output import answers, emit, json_option, page_options, table


def _ref(text: str):
    from dlbox.models import refs

    return refs.resolve(text)


def _plain(text: str):
    """NAME or OWNER/NAME, without a version or alias."""
    from dlbox.errors import UsageError

    ref = _ref(text)
    if ref.version is not None or ref.alias is not None:
        raise UsageError(f"give a model name here ({ref.name}), not a version or alias")
    return ref


@click.group(invoke_without_command=True)
@page_options()
@json_option
@click.pass_context
def models(ctx, limit: int, offset: int, as_json: bool) -> None:
    """Registered models: versions of a run's SavedModel, with lineage, signature and aliases.

    \b
      dlbox models register digits --run ID     version N from the run's artifacts/model
      dlbox models show digits@champion         lineage and signature of a version
      dlbox models alias digits champion 3      point an alias at a version (moves are history)
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls, limit=limit, offset=offset, as_json=as_json)


def _model_line(r: dict) -> str:
    aliases = ", ".join(f"{a}={v}" for a, v in r["aliases"].items()) or "-"
    return (f"{r['name'] + (' (shared)' if r['shared'] else ''):<32} {r['owner']:<12} "
            f"{str(r['latest'] or '-'):<7} {len(r['versions']):<9} {aliases}")


@models.command()
@page_options()
@answers(table(f"{'MODEL':<32} {'OWNER':<12} {'LATEST':<7} {'VERSIONS':<9} ALIASES", _model_line))
def ls(backend, limit: int, offset: int):
    """The models you see: yours, and those an admin shared."""
    return backend.models(limit=limit, offset=offset)


@models.command()
@click.argument("name")
@click.option("--run", "run_id", required=True, metavar="RUN", help="The succeeded run whose artifacts hold the model.")
@click.option("--path", default="model", show_default=True, help="The SavedModel's folder in the run's artifacts.")
@json_option
def register(name: str, run_id: str, path: str, as_json: bool) -> None:
    """Make the next version of model NAME from a run's SavedModel (copied, never linked)."""
    from dlbox.cli.backend import backend
    from dlbox.models import refs

    refs.check_name(name)
    version = backend().register_model(name, run=run_id, path=path)
    if as_json:
        emit(version)
        return
    keys = ", ".join(version["signature"]["signatures"])
    click.echo(f"model {version['name']}:{version['version']} registered from run {version['run_id']} "
               f"(signatures: {keys}; files {version['files_hash'][:12]})")


def print_version(v: dict) -> None:
    click.echo(f"model {v['owner']}/{v['name']}:{v['version']}"
               + (f"  (aliases: {', '.join(v['aliases'])})" if v["aliases"] else ""))
    for key in ("run_id", "image_id", "lock_hash", "git_commit", "git_dirty", "code_hash", "registered_by",
                "registered_at", "path", "files_hash", "files_bytes"):
        click.echo(f"  {key:<14} {v[key] if v[key] is not None else '-'}")
    for repo_digest in v.get("repo_digests") or []:
        click.echo(f"  {'repo_digest':<14} {repo_digest}")
    click.echo(f"  {'metrics':<14} " + (", ".join(f"{k}={val:.4g}" for k, val in v["metrics"].items()) or "-"))
    for key, sig in v["signature"]["signatures"].items():
        click.echo(f"  signature {key} ({sig['method_name']})")
        for side in ("inputs", "outputs"):
            for tname, t in sig[side].items():
                shape = "unknown" if t["shape"] is None else "[" + ", ".join(map(str, t["shape"])) + "]"
                click.echo(f"    {side[:-1]:<6} {tname}: {t['dtype']} {shape}  ({t['name']})")


@models.command()
@click.argument("ref", metavar="NAME[:VERSION|@ALIAS]")
@json_option
def show(ref: str, as_json: bool) -> None:
    """A version's lineage (run, image, lock, commit, metrics) and signature; NAME alone: every version."""
    from dlbox.cli.backend import backend

    found = backend().model(_ref(ref))
    if as_json:
        emit(found)
        return
    if "version_details" not in found:
        print_version(found)
        return
    aliases = ", ".join(f"{a}={v}" for a, v in found["aliases"].items()) or "-"
    click.echo(f"model {found['owner']}/{found['name']}: versions {', '.join(map(str, found['versions'])) or '-'}; "
               f"aliases {aliases}{'; shared' if found['shared'] else ''}")
    if found["version_details"]:
        print_version(found["version_details"][-1])


@models.command()
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Delete ALIAS instead (give no VERSION).")
@json_option
def alias(name: str, alias: str, version: str | None, delete: bool, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION (set or move), or --delete it. Every move is kept (`models history`)."""
    from dlbox.cli.backend import backend
    from dlbox.errors import UsageError
    from dlbox.models import refs

    ref = _plain(name)
    refs.check_alias(alias)
    if delete == (version is not None):
        raise UsageError("give a VERSION to point the alias at, or --delete (not both)")
    number = None if delete else refs.check_version(version)
    moved = backend().set_alias(ref.name, alias, number, owner=ref.owner)
    if as_json:
        emit(moved)
    elif moved["version"] is None:
        click.echo(f"alias {moved['name']}@{alias} deleted (it was version {moved['previous']})")
    else:
        was = f" (was {moved['previous']})" if moved["previous"] is not None else " (new)"
        click.echo(f"alias {moved['name']}@{alias} -> version {moved['version']}{was}")


@models.command()
@click.argument("name")
@page_options()
@answers(table(f"{'WHEN':<25} {'WHO':<12} {'ALIAS':<16} FROM -> TO",
               lambda r: f"{r['at']:<25} {r['by']:<12} {r['alias']:<16} {r['from_version'] or '-'} -> "
                         f"{r['to_version'] or '-'}"))
def history(backend, name: str, limit: int, offset: int):
    """Every alias move of model NAME, oldest first: when, who, which alias, from which version to which."""
    ref = _plain(name)
    return backend.model_history(ref.name, owner=ref.owner, limit=limit, offset=offset)


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@json_option
def rm(ref: str, as_json: bool) -> None:
    """Delete one version (its number is never given again; aliases on it are deleted, as moves)."""
    from dlbox.cli.backend import backend
    from dlbox.errors import UsageError

    parsed = _ref(ref)
    if parsed.version is None:
        raise UsageError("give the version to delete as NAME:VERSION")
    removed = backend().remove_model_version(parsed.name, parsed.version, owner=parsed.owner)
    if as_json:
        emit(removed)
    else:
        click.echo(f"model {removed['name']}:{removed['version']} deleted"
                   + (f" (with aliases {', '.join(removed['aliases'])})" if removed["aliases"] else ""))


@models.command()
@click.argument("name", metavar="[OWNER/]NAME")
@click.option("--off", is_flag=True, help="Stop sharing it.")
@json_option
def share(name: str, off: bool, as_json: bool) -> None:
    """Admins: let every user of the server see and serve a model (read-only for them)."""
    from dlbox.cli.backend import backend

    ref = _plain(name)
    found = backend().share_model(ref.name, owner=ref.owner, shared=not off)
    if as_json:
        emit(found)
    else:
        click.echo(f"model {found['owner']}/{found['name']} is {'shared' if found['shared'] else 'not shared'}")
