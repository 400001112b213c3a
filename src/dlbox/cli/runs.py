"""Run records: runs, runs show/diff/export, reproduce."""

from __future__ import annotations

import click

from dlbox.cli.output import emit, json_option, limit_option, more_hint


@click.group(invoke_without_command=True)
@limit_option(default=1000, most=10_000)
@json_option
@click.pass_context
def runs(ctx, limit: int, as_json: bool) -> None:
    """Run records, newest first: what each job ran on (image ID, lock, git commit), params, last metrics.

    `dlbox runs show ID` has the whole record: environment, code diff, metric history, artifacts.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dlbox.cli.backend import backend

    rows = backend().runs(limit=limit)
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'ID':<13} {'STATE':<11} {'EXIT':<5} {'IMAGE':<19} {'LOCK':<12} {'GIT':<9} METRICS")
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
        click.echo(f"{r['id']:<13} {r['state']:<11} {str(r['exit_code'] if r['exit_code'] is not None else '-'):<5} "
                   f"{r['image_id'][:19]:<19} {(r['lock_hash'] or '-')[:12]:<12} "
                   f"{(r['git_commit'] or '-')[:8] + ('*' if r['git_dirty'] else ''):<9} {metrics}")


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
@json_option
def runs_diff(a: str, b: str, as_json: bool) -> None:
    """What differs between runs A and B: image, lock packages, params, code, metrics."""
    from dlbox.cli.backend import backend
    from dlbox.runs import diff as rundiff

    where = backend()
    result = rundiff.diff(where.run(a), where.run(b))
    if as_json:
        emit(result)
        return
    for section, changes in result.items():
        if section in ("a", "b"):
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

    If that image is gone, it is rebuilt from the run's stored lock; the job runs only if the
    rebuilt lock hash is the recorded one.
    """
    from dlbox.cli.backend import backend
    from dlbox.progress import Progress
    from dlbox.runs import reproduce as reproduction

    where = backend()
    record = where.run(run_id)
    with Progress() as progress:
        body = reproduction.request_for(record, progress)
    job = where.submit(body)
    if as_json:
        emit(job)
    else:
        click.echo(f"job {job['id']} {job['state']}: reproduces run {record['id']} on {job['image_id'][:19]}")
