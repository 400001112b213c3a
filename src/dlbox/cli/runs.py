"""Run records: runs, runs show/diff/export, reproduce."""

from __future__ import annotations

import click

from dlbox.cli.output import answers, emit, json_option, page_options, table


@click.group(invoke_without_command=True)
@page_options(default=1000, most=10_000)
@json_option
@click.pass_context
def runs(ctx, limit: int, offset: int, as_json: bool) -> None:
    """Run records, newest first: what each job ran on (image ID, lock, git commit), params, last metrics.

    `dlbox runs show ID` has the whole record: environment, code diff, metric history, artifacts.
    """
    if ctx.invoked_subcommand is None:
        _list(as_json=as_json, limit=limit, offset=offset)


def _run_line(r: dict) -> str:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
    return (f"{r['id']:<13} {r['state']:<11} {str(r['exit_code'] if r['exit_code'] is not None else '-'):<5} "
            f"{r['image_id'][:19]:<19} {(r['lock_hash'] or '-')[:12]:<12} "
            f"{(r['git_commit'] or '-')[:8] + ('*' if r['git_dirty'] else ''):<9} {metrics}")


@answers(table(f"{'ID':<13} {'STATE':<11} {'EXIT':<5} {'IMAGE':<19} {'LOCK':<12} {'GIT':<9} METRICS", _run_line))
def _list(backend, limit: int, offset: int):
    """`dlbox runs` without a subcommand (the group's own options)."""
    return backend.runs(limit=limit, offset=offset)


@runs.command(name="show")
@click.argument("run_id")
@json_option
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run record in full."""
    from dlbox.cli.backend import backend

    record = backend().run(run_id)
    if as_json:
        emit(record)
        return
    for key in ("id", "state", "reason", "exit_code", "image", "image_id", "lock_hash", "spec_hash", "git_commit",
                "git_dirty", "submitted_at", "started_at", "ended_at", "peak_memory"):
        click.echo(f"{key:<13} {record[key]}")
    for repo_digest in record.get("repo_digests") or []:
        click.echo(f"{'repo_digest':<13} {repo_digest}")
    code = record.get("code")
    if code:
        from dlbox.snapshots import human

        click.echo(f"{'code':<13} {code['hash']} ({code['files']} files, {human(code['bytes'] or 0)}, "
                   f"read-only at {code['dest']})")
    else:
        click.echo(f"{'code':<13} - (no snapshot)")
    click.echo(f"{'command':<13} {' '.join(record['command'])}")
    click.echo(f"{'params':<13} {record['params']}")
    click.echo(f"{'metrics':<13} {record['metrics']}")
    click.echo(f"{'artifacts':<13} {', '.join(record['artifacts']) or '-'} (in {record['artifacts_dir']})")
    for link in record.get("artifact_links") or []:
        click.echo(f"{'':<13} {link['path']} -> {link['target']} (a link: recorded, not followed)")
    for note in record.get("notes") or []:
        click.echo(f"{'note':<13} {note}")


@runs.command(name="diff")
@click.argument("a")
@click.argument("b")
@click.option("--code", "show_code", is_flag=True, help="Also a unified diff of each text file that differs.")
@json_option
def runs_diff(a: str, b: str, show_code: bool, as_json: bool) -> None:
    """What differs between runs A and B: image, lock packages, params, code (and the files of their
    code snapshots), metrics."""
    from dlbox.cli.backend import backend
    from dlbox.runs import diff as rundiff

    result = rundiff.runs_diff(backend(), a, b, code=show_code)
    if as_json:
        emit(result)
        return
    for section, changes in result.items():
        if section in ("a", "b", "unified"):
            continue
        if section == "files":
            click.echo("files: same" if not changes else "files:")
            for change in changes:
                click.echo(f"  {change['change']}: {change['path']}")
            for text in result.get("unified") or []:
                click.echo(text, nl=not text.endswith("\n"))
            continue
        if not changes:
            click.echo(f"{section}: same")
            continue
        click.echo(f"{section}:")
        for change in changes:
            click.echo(f"  {change['name']}: {change['a']} -> {change['b']}")


@runs.command(name="export")
@click.argument("run_id")
@click.option("--mlflow", "uri", required=True, metavar="URI", help="MLflow tracking server, e.g. http://mlflow:5000.")
@click.option("--experiment", default="dlbox", show_default=True, help="MLflow experiment (made if missing).")
@json_option
def runs_export(run_id: str, uri: str, experiment: str, as_json: bool) -> None:
    """Export a run record to MLflow: params, metric history, and the image ID and git commit tags."""
    from dlbox.cli.backend import backend
    from dlbox.runs import mlflow_export

    result = mlflow_export.export(backend().run(run_id), uri, experiment)
    if as_json:
        emit(result)
    else:
        click.echo(f"exported run {result['run']} to {uri} as MLflow run {result['mlflow_run_id']}")


@click.command()
@click.argument("run_id")
@json_option
def reproduce(run_id: str, as_json: bool) -> None:
    """Run a recorded run again: same command and params on the exact image ID.

    If that image is gone, it is pulled by a repository digest the run recorded (`dlbox push`), else
    rebuilt from the run's stored lock; the job runs only if the rebuilt lock hash is the recorded one.
    """
    from dlbox.cli.backend import backend
    from dlbox.progress import Progress
    from dlbox.runs import reproduce as reproduction

    with Progress() as progress:
        record, job = reproduction.reproduce(backend(), run_id, progress)
    if as_json:
        emit(job)
        return
    code = job.get("code")
    where = (f"with the recorded code snapshot {code['hash'][:12]} (not the folder's current state)" if code
             else "with no code snapshot (the run had none)")
    click.echo(f"job {job['id']} {job['state']}: reproduces run {record['id']} on {job['image_id'][:19]} {where}")


@runs.command(name="export-code")
@click.argument("run_id")
@click.argument("directory", type=click.Path(file_okay=False))
@json_option
def runs_export_code(run_id: str, directory: str, as_json: bool) -> None:
    """Write the code snapshot run RUN_ID ran into DIRECTORY (new or empty)."""
    from pathlib import Path

    from dlbox.cli.backend import backend

    result = backend().export_code(run_id, Path(directory))
    if as_json:
        emit(result)
    else:
        click.echo(f"wrote code snapshot {result['hash'][:12]} of run {run_id} ({result['files']} files) to {directory}")


@click.command()
@json_option
def gc(as_json: bool) -> None:
    """Remove code snapshots no run refers to (kept an hour at least); print what was freed."""
    from dlbox.cli.backend import backend
    from dlbox.snapshots import human

    result = backend().gc()
    if as_json:
        emit(result)
        return
    for snapshot_hash in result["removed"]:
        click.echo(f"removed code snapshot {snapshot_hash[:12]}")
    click.echo(f"freed {human(result['freed_bytes'])} ({len(result['removed'])} snapshots)")
