"""Pipelines: pipeline run/ls/show/logs/cancel/report, and the triggers (hooks install, hooks project)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from dlbox.cli.output import answers, emit, json_option, page_options, table

STATE_MARK = {"pending": " ", "running": ">", "succeeded": "+", "failed": "x", "skipped": "-", "cancelled": "x"}
EXIT_NOTE = {0: "promoted", 1: "failed", 3: "rejected by the gate"}
# --follow asks again after 0.1 s, then less often up to each 1 s: a 1 s period added ~0.5 s to every
# quick pipeline's wall time (benchmark 14), while a long one is asked once a second.
POLL_FIRST, POLL_MOST = 0.1, 1.0


@click.group()
def pipeline() -> None:
    """A commit, from code to champion: build, test, train, evaluate, gate, register, deploy, report.

    The stages are declared in the `pipeline:` section of the commit's dlbox.yaml, and every one runs
    the commit's code (`git archive REF`), never the working tree. The dlbox service runs them: the
    pipeline goes on after this command exits and after the service restarts.

    \b
      dlbox pipeline run --follow         the pipeline of HEAD; exit 0 promoted, 1 failed, 3 rejected
      dlbox pipeline show ID              stages, their runs and the gate's verdict metric by metric
      dlbox pipeline report ID --open     the HTML report (Markdown beside it, for a pull request)
    """


def print_pipeline(p: dict, **_params) -> None:
    commit = (p.get("git_commit") or "")[:12]
    click.echo(f"pipeline {p['id']}: {p['state']}{' (' + p['reason'] + ')' if p.get('reason') else ''}")
    click.echo(f"  commit   {commit} {p.get('message') or ''}".rstrip())
    if p.get("author"):
        click.echo(f"  author   {p['author']}")
    if p.get("image_id"):
        click.echo(f"  image    {p['image_id'][7:19]} (lock {(p.get('lock_hash') or '')[:12]})")
    for s in p.get("stages", []):
        runs = f" runs {', '.join(s['runs'])}" if s["runs"] else ""
        took = f" {s['duration']:.1f}s" if s.get("duration") is not None and s["state"] != "pending" else ""
        click.echo(f"  [{STATE_MARK[s['state']]}] {s['name']:<9} {s['state']:<10}{took}{runs}"
                   f"{'  ' + s['reason'] if s.get('reason') else ''}")
    verdict = p.get("verdict")
    if verdict:
        against = f"champion {p['model']}:{p['champion_version']}" if p.get("champion_version") else \
            "no champion yet (first run): change gates skipped"
        click.echo(f"  gate     {'blessed' if verdict['passed'] else 'rejected'} (against {against})")
        for m in verdict.get("metrics", []):
            click.echo(f"    {'pass' if m['passed'] else 'FAIL'} {m['name']}: "
                       + "; ".join(c["message"] for c in m.get("checks", [])))
    if p.get("model_version"):
        click.echo(f"  model    {p['model']}:{p['model_version']}")


def _follow(b, found: dict, as_json: bool) -> None:
    """Stage states as they change, until the pipeline ends; exits with its verdict."""
    seen: dict[str, str] = {}
    state = None
    pause = POLL_FIRST
    while True:
        for s in found["stages"]:
            if seen.get(s["name"]) != s["state"] and s["state"] != "pending":
                seen[s["name"]] = s["state"]
                pause = POLL_FIRST  # stages that just moved: the next may be quick too
                if not as_json:
                    click.echo(f"[{STATE_MARK[s['state']]}] {s['name']:<9} {s['state']}"
                               f"{'  ' + s['reason'] if s.get('reason') else ''}", err=False)
        if found["state"] != state and not as_json:
            state = found["state"]
        if found.get("exit_code") is not None:
            break
        time.sleep(pause)
        pause = min(POLL_MOST, pause * 1.5)
        found = b.pipeline(found["id"])
    if as_json:
        emit(found)
    else:
        click.echo(f"pipeline {found['id']}: {found['state']}{' (' + found['reason'] + ')' if found.get('reason') else ''}")
    sys.exit(found["exit_code"])


@pipeline.command("run")
@click.option("--ref", default="HEAD", show_default=True, help="The commit (branch, tag or SHA) to run.")
@click.option("--follow", is_flag=True, help="Show the stages as they go; exit 0 promoted, 1 failed, 3 rejected.")
@click.option("--trigger", type=click.Choice(["cli", "hook", "ci"]), default="cli", hidden=True)
@json_option
def run_cmd(ref: str, follow: bool, trigger: str, as_json: bool) -> None:
    """Record a pipeline of commit REF of the project here, and return (the service runs it)."""
    from dlbox.cli.backend import backend

    b = backend()
    found = b.submit_pipeline(Path.cwd(), ref, trigger=trigger)
    if follow:
        if not as_json:
            click.echo(f"pipeline {found['id']} of {(found.get('git_commit') or '')[:12]}: {found['state']}")
        _follow(b, found, as_json)
    if as_json:
        emit(found)
    else:
        click.echo(f"pipeline {found['id']} of {(found.get('git_commit') or '')[:12]} queued "
                   f"(dlbox pipeline show {found['id']})")


@pipeline.command("ls")
@page_options()
@answers(table(f"{'ID':<13} {'STATE':<10} {'COMMIT':<13} {'MODEL':<18} {'SUBMITTED':<21} NOW",
               lambda p: f"{p['id']:<13} {p['state']:<10} {(p.get('git_commit') or '-')[:12]:<13} "
                         f"{(p['model'] or '-') + (':' + str(p['model_version']) if p.get('model_version') else ''):<18} "
                         f"{(p.get('submitted_at') or '')[:19]:<21} "
                         f"{next((s['name'] for s in p['stages'] if s['state'] == 'running'), '-')}",
               empty="no pipelines yet (dlbox pipeline run)"))
def ls_cmd(b, limit: int, offset: int):
    """Pipelines, newest last."""
    return b.pipelines(limit=limit, offset=offset)


@pipeline.command("show")
@click.argument("pipeline_id")
@answers(print_pipeline)
def show(b, pipeline_id: str):
    """A pipeline's stages (state, duration, runs, reason) and the gate's verdict, metric by metric."""
    return b.pipeline(pipeline_id)


@pipeline.command("logs")
@click.argument("pipeline_id")
@click.option("--stage", type=click.Choice(["build", "test", "train", "evaluate", "gate", "register", "deploy",
                                            "report"]), help="One stage's log only.")
def logs(pipeline_id: str, stage: str | None) -> None:
    """The stages' logs: what the service did, then each run's output."""
    from dlbox.cli.backend import backend

    data = backend().pipeline_logs(pipeline_id, stage=stage)
    sys.stdout.buffer.write(data if isinstance(data, bytes) else str(data).encode())
    sys.stdout.buffer.flush()


@pipeline.command("cancel")
@click.argument("pipeline_id")
@answers(print_pipeline)
def cancel(b, pipeline_id: str):
    """Stop a pipeline: its running job is cancelled, no later stage runs."""
    return b.cancel_pipeline(pipeline_id)


def _report_text(r: dict, open_it: bool = False, **_params) -> str:
    if open_it:
        import webbrowser

        if not webbrowser.open(Path(r["html"]).as_uri()):
            click.echo("(no browser here; open the file below)", err=True)
    return f"{r['html']}\n{r['md']}"


@pipeline.command("report")
@click.argument("pipeline_id")
@click.option("--open", "open_it", is_flag=True, help="Open the HTML report in the browser, where there is one.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="Copy the files here (from a server: default ./dlbox-report-ID).")
@answers(_report_text)
def report(b, pipeline_id: str, open_it: bool, dest: Path | None):
    """Where a pipeline's report is: report.html and report.md, with its PNG plots beside them."""
    return b.pipeline_report(pipeline_id, dest)


# --- triggers ------------------------------------------------------------------------------------

HOOK_MARK = "# dlbox post-commit hook"


def hook_script(dlbox: list[str], log: str) -> str:
    import shlex

    command = " ".join(shlex.quote(part) for part in dlbox)
    return f"""#!/bin/sh
{HOOK_MARK} (written by `dlbox hooks install`): submits a pipeline of the new commit
# in the background, so the commit does not wait; what it says goes to {log}
commit=$(git rev-parse HEAD) || exit 0
nohup {command} pipeline run --ref "$commit" --trigger hook >>{shlex.quote(log)} 2>&1 </dev/null &
exit 0
"""


@click.group()
def hooks() -> None:
    """Triggers: a git post-commit hook here, or (on a team server) signed push webhooks."""


@hooks.command("install")
@click.option("--force", is_flag=True, help="Replace a post-commit hook that dlbox did not write.")
@json_option
def install(force: bool, as_json: bool) -> None:
    """Add a git post-commit hook that submits each new commit's pipeline (in the background)."""
    import shutil
    import subprocess

    from dlbox.errors import UsageError

    done = subprocess.run(["git", "rev-parse", "--git-path", "hooks", "--absolute-git-dir"], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise UsageError("not in a git repository (run `dlbox hooks install` in your project)")
    hooks_dir, git_dir = [Path(line) for line in done.stdout.splitlines()[:2]]
    hooks_dir = hooks_dir if hooks_dir.is_absolute() else Path.cwd() / hooks_dir
    target = hooks_dir / "post-commit"
    if target.exists() and HOOK_MARK not in target.read_text(errors="replace") and not force:
        raise UsageError(f"{target} exists and is not dlbox's; --force replaces it")
    found = shutil.which("dlbox")
    command = [found] if found else [sys.executable, "-m", "dlbox"]
    hooks_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".dlbox-new")
    partial.write_text(hook_script(command, str(git_dir / "dlbox-hook.log")))
    partial.chmod(0o755)
    partial.replace(target)
    answer = {"hook": str(target), "log": str(git_dir / "dlbox-hook.log"), "command": command}
    if as_json:
        emit(answer)
    else:
        click.echo(f"installed {target}: each commit submits its pipeline (output in {answer['log']})")


@hooks.command("project")
@click.argument("name")
@click.option("--repo", required=True, help="The server's clone that holds the pushed commits (absolute path).")
@click.option("--owner", help="Whose pipelines they are (default: you).")
@answers(lambda r, **_: f"webhook project {r['name']} (pipelines run as {r['owner']} from {r['repo']})\n"
                        f"  URL     POST /api/hooks/git (content type application/json)\n"
                        f"  secret  {r['secret']}\n  (the secret is shown only now; give it to GitHub)")
def project(b, name: str, repo: str, owner: str | None):
    """Let signed GitHub push webhooks of repository NAME (owner/name) run pipelines on this server."""
    return b.add_hook_project(name, repo=repo, owner=owner)
