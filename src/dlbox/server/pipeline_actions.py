"""What the server does with pipelines for a caller: submit (intent only), see, cancel, read logs and
report files, and the push webhook. Someone else's pipeline does not exist (404); admins see all."""

from __future__ import annotations

import time
from pathlib import Path

from dlbox import snapshots
from dlbox.errors import NotFound, Unauthorized, UsageError
from dlbox.jobs import runner as jobs
from dlbox.pipelines import driver, hook_keys, report, source, webhook
from dlbox.pipelines.state import STAGES, PipelineState
from dlbox.server import accounts
from dlbox.server.deps import Context
from dlbox.store.db import HookProject, Pipeline, Store

LOG_LIMIT = 8 * 1024 * 1024  # the last bytes of a stage's log that an answer holds


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z" if ts else None


def pipeline_json(store: Store, pipeline: Pipeline, *, stages: bool = True) -> dict:
    data = {
        "id": pipeline.id, "user": pipeline.user, "state": pipeline.state, "reason": pipeline.reason,
        "ref": pipeline.ref, "git_commit": pipeline.git_commit, "author": pipeline.author,
        "message": pipeline.message, "code_hash": pipeline.code_hash, "trigger": pipeline.trigger,
        "image_id": pipeline.image_id, "lock_hash": pipeline.lock_hash, "model": pipeline.model_name,
        "model_version": pipeline.model_version, "champion_version": pipeline.champion_version,
        "verdict": pipeline.verdict, "cancel_requested": bool(pipeline.cancel_requested),
        "submitted_at": _iso(pipeline.submitted_at), "started_at": _iso(pipeline.started_at),
        "ended_at": _iso(pipeline.ended_at),
        "exit_code": {"promoted": 0, "rejected": 3}.get(pipeline.state,
                                                         1 if PipelineState(pipeline.state).is_finished() else None),
        "report": (report.folder(pipeline.id) / "report.html").is_file(),
    }
    if stages:
        data["stages"] = [{
            "name": s.name, "state": s.state, "reason": s.reason, "runs": list(s.job_ids or []),
            "result": s.result, "attempts": s.attempts, "started_at": _iso(s.started_at), "ended_at": _iso(s.ended_at),
            "duration": round((s.ended_at or time.time()) - s.started_at, 3) if s.started_at else None,
        } for s in store.stages(pipeline.id)]
    return data


def create(store: Store, user: str, *, code_hash: str, ref: str | None, git_commit: str | None, author: str | None,
           message: str | None, trigger: str) -> Pipeline:
    """Record a pipeline of the stored snapshot `code_hash`: its dlbox.yaml is checked now (one clear
    error before anything runs); the loop does the rest."""
    snapshots.check_hash(code_hash)
    snapshots.manifest(code_hash)  # NotFound when not stored
    pipeline = Pipeline(id=jobs.new_id(), user=user, state=PipelineState.QUEUED.value, ref=ref,
                        git_commit=git_commit, author=author, message=message, code_hash=code_hash, trigger=trigger,
                        cancel_requested=False, submitted_at=time.time())
    spec = source.spec_of(pipeline)  # a UsageError (400) naming file:line when the section is wrong
    pipeline.model_name = source.model_name(spec)
    return store.add_pipeline(pipeline, list(STAGES))


def submit(ctx: Context, who: accounts.Caller, body) -> dict:
    if ctx.mode == "server" and not who.admin and not ctx.store.has_snapshot(who.name, body.code_hash):
        raise NotFound(f"no code snapshot {body.code_hash[:12]} of yours on this server (send it first)")
    pipeline = create(ctx.store, who.name, code_hash=body.code_hash, ref=body.ref, git_commit=body.git_commit,
                      author=body.author, message=body.message, trigger=body.trigger)
    ctx.loop.wake()
    return pipeline_json(ctx.store, pipeline)


def get(ctx: Context, who: accounts.Caller, pipeline_id: str) -> Pipeline:
    found = ctx.store.get_pipeline(pipeline_id) if isinstance(pipeline_id, str) and len(pipeline_id) <= 32 else None
    if found is None or not (who.admin or ctx.mode != "server" or found.user == who.name):
        raise NotFound(f"no pipeline {pipeline_id[:40]!r} (see `dlbox pipeline ls`)")
    return found


def listing(ctx: Context, who: accounts.Caller, *, limit: int, offset: int) -> tuple[list[dict], bool]:
    mine = None if who.admin or ctx.mode != "server" else who.name
    found = ctx.store.pipelines(user=mine, newest=limit + 1, skip=offset)
    more, found = len(found) > limit, found[-limit:]
    return [pipeline_json(ctx.store, p, stages=True) for p in found], more


def cancel(ctx: Context, who: accounts.Caller, pipeline_id: str) -> dict:
    pipeline = get(ctx, who, pipeline_id)
    if not PipelineState(pipeline.state).is_finished():
        ctx.store.update_pipeline(pipeline.id, cancel_requested=True)
        ctx.loop.wake()
    return pipeline_json(ctx.store, ctx.store.get_pipeline(pipeline.id))


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_LIMIT))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return ("[... earlier output cut]\n" if size > LOG_LIMIT else "") + data.decode(errors="replace")


def logs(ctx: Context, who: accounts.Caller, pipeline_id: str, stage: str | None) -> str:
    """A stage's log (every stage's, in order, without `stage`): the service's lines, then its run's output."""
    pipeline = get(ctx, who, pipeline_id)
    if stage is not None and stage not in STAGES:
        raise UsageError(f"--stage: {stage[:40]!r} is none of {', '.join(STAGES)}")
    parts = []
    for row in ctx.store.stages(pipeline.id):
        if stage is not None and row.name != stage:
            continue
        text = _tail(driver.log_path(pipeline.id, row.name))
        for run in row.job_ids or []:
            text += f"--- run {run} output ---\n" + _tail(jobs.run_dir(run) / "output.log")
        if stage is None:
            parts.append(f"=== {row.name}: {row.state} ===\n{text}")
        else:
            parts.append(text)
    return "\n".join(parts)


def report_file(ctx: Context, who: accounts.Caller, pipeline_id: str, name: str) -> Path:
    pipeline = get(ctx, who, pipeline_id)
    if name not in report.FILES:
        raise NotFound(f"no report file {name[:40]!r} (one of {', '.join(report.FILES)})")
    path = report.folder(pipeline.id) / name
    if not path.is_file():
        raise NotFound(f"pipeline {pipeline.id} has no {name} (yet)")
    return path


# --- triggers --------------------------------------------------------------------------------------


def add_project(ctx: Context, who: accounts.Caller, *, name: str, repo: str, owner: str | None) -> dict:
    """Let signed pushes of repository `name` run pipelines (as `owner`) from the server's clone `repo`;
    the new secret is shown once here (GitHub needs it too)."""
    from dlbox.errors import Forbidden

    if ctx.mode == "server" and not who.admin:
        raise Forbidden("hooks: admins only")
    webhook.check_project(name)
    path = Path(repo)
    if not path.is_absolute() or not path.is_dir():
        raise UsageError(f"--repo: {repo[:200]!r} is no folder on the server (give the absolute path of a clone)")
    if ctx.store.get_hook_project(name) is not None:
        ctx.store.remove_hook_project(name)
    salt = hook_keys.new_salt()  # the database keeps the salt only; the secret is derived (pipelines/hook_keys.py)
    secret = hook_keys.secret_of(name, salt)
    ctx.store.add_hook_project(HookProject(name=name, owner=owner or who.name, repo=str(path), secret=salt,
                                           created_at=time.time()))
    return {"name": name, "owner": owner or who.name, "repo": str(path), "secret": secret}


def git_webhook(ctx: Context, body: bytes, signature: str | None, event: str | None) -> dict:
    """A GitHub push webhook: the project is looked up by the body's repository name, and nothing else in the
    body is trusted (nor anything run) before its X-Hub-Signature-256 checks against that project's secret.
    Wrong, missing, or an unknown project: 401, the same for all three."""
    name = webhook.repository_of(body)
    project = ctx.store.get_hook_project(name) if name else None
    # an unknown project costs the same work (a derivation and a check) as a known one
    secret = hook_keys.secret_of(project.name if project else "", project.secret if project else hook_keys.new_salt())
    if not webhook.verify(secret.encode(), body, signature) or project is None:
        raise Unauthorized("the webhook's X-Hub-Signature-256 does not match (or is missing)")
    if event == "ping":
        return {"ran": False, "reason": "ping"}
    push = webhook.push_of(body)
    if push is None:
        return {"ran": False, "reason": "not a push of a commit (a branch deletion, or another event)"}
    import tempfile

    from dlbox.pipelines import source

    with tempfile.TemporaryDirectory(prefix="dlbox-hook-") as work:
        snap, commit = source.snapshot(Path(project.repo), push["after"], Path(work) / "tree")
        new = snapshots.store(snap)
        if ctx.mode == "server" and not ctx.store.has_snapshot(project.owner, snap.hash):
            ctx.store.add_snapshot(project.owner, snap.hash, files=snap.files, size=snap.bytes)
    pipeline = create(ctx.store, project.owner, code_hash=snap.hash, ref=push["ref"], git_commit=commit.sha,
                      author=commit.author, message=commit.message, trigger="webhook")
    ctx.loop.wake()
    return {"ran": True, "pipeline": pipeline.id, "commit": commit.sha, "new_snapshot": new}
