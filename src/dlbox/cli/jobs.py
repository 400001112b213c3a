"""Jobs: run (submitted by cli/submit.py before click loads), jobs, wait, cancel."""

from __future__ import annotations

import sys

import click

from dlbox.cli.output import emit, json_option, more_hint, page_options, print_job
from dlbox.errors import UsageError


@click.command()
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[SPEC] -- CMD...")
@click.option("--preset", metavar="NAME", help="Run in a built-in spec's image.")
@click.option("--image", metavar="REF", help="Run in this image.")
@click.option("--workspace", metavar="NAME", help="Run in a workspace's image with its /workspace volume.")
@click.option("--name", help="A name for the job.")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST[:ro]", help="Mount a host directory (repeatable).")
@click.option("--memory", metavar="SIZE", help="Memory limit; past it the job ends as oom-killed.")
@click.option("--cpus", type=float, help="CPUs the job needs (default 1); it waits until they are free.")
@click.option("--gpus", metavar="all|N|ID,ID", help="GPUs the job needs.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter, recorded with the run and given as $DLBOX_PARAM_KEY (repeatable).")
@click.option("--code", metavar="DIR", help="Snapshot this directory's files instead of the project's.")
@click.option("--no-code", "no_code", is_flag=True, help="Give the job no code snapshot.")
@json_option
def run(args, preset, image, workspace, name, mounts, memory, cpus, gpus, params, code, no_code, as_json) -> None:
    """Submit CMD as a detached job and return at once with its id.

    The job runs in its own container and keeps running when this command, the terminal or
    dlbox's service ends. Its record keeps the exact image ID, lock, git commit, code snapshot
    and metrics written to $DLBOX_RUN_DIR/metrics.jsonl.

    The project's files (the spec's directory, else this one; what git tracks plus untracked
    files it does not ignore, or outside git all but .dlboxignore's patterns) go with the job as
    a content-addressed snapshot, read-only at its working directory (/workspace/code, or the
    spec's code.dest). Over DLBOX_CODE_LIMIT (200m) or DLBOX_CODE_FILES (20000) it is refused.

    SPEC is a .yaml/.yml (or existing) file followed by options only, then `--`. Otherwise CMD
    starts at the first word that is not an option; the options and `--` after it are CMD's own.

    \b
    cd examples/digits && dlbox run --preset tensorflow-2.9 -- python train.py
    """
    # dlbox.launch hands every well-formed `dlbox run` to dlbox.submit before click loads, and
    # comes here only for --help and for what click refuses; click also drops the `--` that
    # separates SPEC from CMD, so it could not read them apart.
    from dlbox.cli.submit import USAGE

    raise UsageError(USAGE)


@click.command(name="jobs")
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@page_options()
@json_option
def jobs_cmd(show_all: bool, limit: int, offset: int, as_json: bool) -> None:
    """List queued and running jobs (--all: finished ones too), the newest last."""
    from dlbox.cli.backend import backend

    rows = backend().jobs(show_all=show_all, limit=limit, offset=offset)
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit, offset)
    if not rows:
        click.echo("no jobs; submit one with `dlbox run ... -- CMD`")
        return
    click.echo(f"{'ID':<13} {'STATE':<11} {'USER':<10} {'CPUS':<5} {'SUBMITTED':<21} COMMAND")
    for j in rows:
        click.echo(f"{j['id']:<13} {j['state']:<11} {j['user']:<10} {j['resources']['cpus']:<5g} "
                   f"{j['submitted_at']:<21} {' '.join(j['command'])[:60]}")


@click.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@json_option
def wait(job_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a job to end; exit with its exit code."""
    from dlbox.cli.backend import backend

    job = backend().wait(job_id, timeout=timeout)
    if as_json:
        emit({"id": job["id"], "state": job["state"], "exit_code": job["exit_code"], "reason": job["reason"]})
    else:
        print_job(job)
    code = job["exit_code"]
    sys.exit(code if isinstance(code, int) and 0 <= code < 256 else (0 if job["state"] == "succeeded" else 1))


@click.command()
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job: SIGTERM, then SIGKILL after 10 s; a queued job never starts."""
    from dlbox.cli.backend import backend

    job = backend().cancel(job_id)
    if as_json:
        emit(job)
    else:
        click.echo(f"job {job['id']}: cancel requested ({job['state']})")
